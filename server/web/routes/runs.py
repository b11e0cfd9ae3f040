"""REST routes of the run resources: runs, comparisons, compare and export.

Thin: validation in the schemas, behaviour in the run service.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response, status

from ....model.config import MAX_STEPS, RunConfig
from ...runs.compare import pair_speedups, summarize_run
from ...runs.schemas import (
    CompareResult,
    ComparisonCreate,
    ComparisonPublic,
    MetricsPublic,
    RunComparison,
    RunCreate,
    RunList,
    RunPublic,
)
from ...status import RunStatus
from ...storage.points import PointCsv
from ..deps import ServiceDep
from ..problems import invalid
from ..schemas import LIMITS

router = APIRouter(prefix="/api")
CONFIG_COLUMNS = list(RunConfig.model_fields)


@router.post("/runs", status_code=status.HTTP_201_CREATED, response_model=RunPublic)
async def create_run(body: RunCreate, service: ServiceDep) -> RunPublic:
    return service.create_run(body.config(), body.label)


@router.post("/comparisons", status_code=status.HTTP_201_CREATED, response_model=ComparisonPublic)
async def create_comparison(body: ComparisonCreate, service: ServiceDep) -> ComparisonPublic:
    comparison_id, _ = service.create_comparison(body.config(), body.label)
    return service.comparison(comparison_id)


@router.get("/comparisons/{comparison_id}", response_model=ComparisonPublic)
async def get_comparison(comparison_id: str, service: ServiceDep) -> ComparisonPublic:
    return service.comparison(comparison_id)


@router.get("/runs", response_model=RunList)
async def list_runs(
    service: ServiceDep,
    status: RunStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> RunList:
    runs, total = service.list_runs(status, limit, offset)
    return RunList(items=runs, total=total)


@router.get("/runs/{run_id}", response_model=RunPublic)
async def get_run(run_id: str, service: ServiceDep) -> RunPublic:
    return service.get(run_id)


@router.get("/runs/{run_id}/metrics", response_model=MetricsPublic)
async def get_metrics(
    run_id: str,
    service: ServiceDep,
    since_step: Annotated[int | None, Query(ge=0, le=MAX_STEPS)] = None,
) -> MetricsPublic:
    return MetricsPublic(run_id=run_id, points=service.points(run_id, since_step=since_step))


@router.get("/runs/{run_id}/metrics.csv", response_class=Response)
async def get_metrics_csv(run_id: str, service: ServiceDep) -> Response:
    return Response(
        PointCsv(service.points(run_id)).text(),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="bnlab-{run_id}.csv"'},
    )


@router.post("/runs/{run_id}/cancel", status_code=status.HTTP_202_ACCEPTED)
async def cancel_run(run_id: str, service: ServiceDep) -> RunPublic:
    return service.cancel(run_id)


@router.post("/runs/{run_id}/resume", status_code=status.HTTP_202_ACCEPTED)
async def resume_run(run_id: str, service: ServiceDep) -> RunPublic:
    """Continue an interrupted (or failed) run from its last checkpoint."""
    return service.resume(run_id)


@router.delete("/runs/{run_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_run(run_id: str, service: ServiceDep) -> Response:
    service.delete(run_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _run_ids(runs: str) -> list[str]:
    ids = list(dict.fromkeys(i.strip() for i in runs.split(",") if i.strip()))
    if not ids:
        raise invalid(("query", "runs"), "give at least one run id, e.g. ?runs=abc,def")
    if len(ids) > LIMITS.compare_max_runs:
        raise invalid(("query", "runs"), f"at most {LIMITS.compare_max_runs} runs at once")
    return ids


RunsQuery = Annotated[str, Query(description="Comma-separated run ids", max_length=2000)]


# A CNN point's diagnostics are ~7.5 KB; the page polls compare while runs train
# and reads only the summaries, so they come only when asked for.
_WITHOUT_DIAGNOSTICS = {"runs": {"__all__": {"points": {"__all__": {"diagnostics"}}}}}
DiagnosticsFlag = Annotated[
    bool, Query(description="Include each point's per-layer diagnostics (large)")
]


@router.get("/compare", response_model=CompareResult)
async def compare(
    runs: RunsQuery,
    service: ServiceDep,
    diagnostics: DiagnosticsFlag = False,
) -> Response:
    items, summaries = [], {}
    for run_id in _run_ids(runs):
        run = service.get(run_id)
        points = service.points(run_id)
        summaries[run_id] = summarize_run(run, points)
        items.append(RunComparison(run=run, points=points, summary=summaries[run_id]))
    result = CompareResult(runs=items, pairs=pair_speedups([i.run for i in items], summaries))
    exclude = None if diagnostics else _WITHOUT_DIAGNOSTICS
    return Response(result.model_dump_json(exclude=exclude), media_type="application/json")


@router.get("/export", response_class=Response)
async def export(
    runs: RunsQuery, service: ServiceDep, format: Literal["csv", "json"] = "csv"
) -> Response:
    selected = [(service.get(i), service.points(i)) for i in _run_ids(runs)]
    name = f"bnlab-export-{len(selected)}-runs.{format}"
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    if format == "json":
        body = {
            "runs": [
                {
                    "run": r.model_dump(mode="json"),
                    "points": [p.model_dump(mode="json") for p in pts],
                }
                for r, pts in selected
            ]
        }
        return Response(json.dumps(body), media_type="application/json", headers=headers)
    # One table for every run: the diagnostics' columns are those of all of them.
    table = PointCsv(p for _, points in selected for p in points)
    places = (
        [run.id, run.label, *(run.config.model_dump()[c] for c in CONFIG_COLUMNS)]
        for run, points in selected
        for _ in points
    )
    body = table.text(["run_id", "label", *CONFIG_COLUMNS], places)
    return Response(body, media_type="text/csv", headers=headers)
