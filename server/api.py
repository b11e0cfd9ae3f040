"""REST routes under /api. Thin: validation in schemas, behaviour in RunService."""

from __future__ import annotations

import csv
import io
import json
from importlib import metadata
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Response, status

from bnlab.model.config import MAX_STEPS, RunConfig
from bnlab.server.cell_diagnostics import UnknownLayer
from bnlab.server.deps import ExperimentsDep, ServiceDep, SettingsDep
from bnlab.server.experiment import ExperimentCreate
from bnlab.server.points import PointCsv, point_public
from bnlab.server.schemas import (
    CompareResult,
    ComparisonCreate,
    ComparisonPublic,
    ExperimentDiagnostics,
    ExperimentExport,
    ExperimentList,
    ExperimentPlan,
    ExperimentPublic,
    Health,
    MetricsPublic,
    PointPublic,
    PresetList,
    RunComparison,
    RunCreate,
    RunList,
    RunPublic,
    WorkerLoad,
)
from bnlab.server.status import RunStatus
from bnlab.server.summary import pair_speedups, summarize

router = APIRouter(prefix="/api")
MAX_RUNS_PER_REQUEST = 20
CONFIG_COLUMNS = list(RunConfig.model_fields)


@router.post("/runs", status_code=status.HTTP_201_CREATED, response_model=RunPublic)
async def create_run(body: RunCreate, service: ServiceDep) -> RunPublic:
    return service.create_run(body.config(), body.label)


@router.post("/comparisons", status_code=status.HTTP_201_CREATED, response_model=ComparisonPublic)
async def create_comparison(body: ComparisonCreate, service: ServiceDep) -> ComparisonPublic:
    comparison_id, runs = service.create_comparison(body.config(), body.label)
    row, _ = service.store.comparison_runs(comparison_id)
    return ComparisonPublic(id=comparison_id, created_at=row["created_at"], runs=runs)


@router.get("/comparisons/{comparison_id}", response_model=ComparisonPublic)
async def get_comparison(comparison_id: str, service: ServiceDep) -> ComparisonPublic:
    row, runs = service.store.comparison_runs(comparison_id)
    if row is None:
        raise HTTPException(404, f"no comparison with id {comparison_id!r}")
    return ComparisonPublic(
        id=comparison_id, created_at=row["created_at"], runs=[service.public(r) for r in runs]
    )


@router.get("/runs", response_model=RunList)
async def list_runs(
    service: ServiceDep,
    status: RunStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> RunList:
    rows, total = service.store.list_runs(status, limit, offset)
    return RunList(items=[service.public(row) for row in rows], total=total)


@router.get("/runs/{run_id}", response_model=RunPublic)
async def get_run(run_id: str, service: ServiceDep) -> RunPublic:
    return service.get(run_id)


def _points(service, run_id: str, since_step: int | None = None) -> list[PointPublic]:
    service.get(run_id)  # 404 for an unknown run
    return [point_public(row) for row in service.store.points(run_id, since_step=since_step)]


@router.get("/runs/{run_id}/metrics", response_model=MetricsPublic)
async def get_metrics(
    run_id: str,
    service: ServiceDep,
    since_step: Annotated[int | None, Query(ge=0, le=MAX_STEPS)] = None,
) -> MetricsPublic:
    return MetricsPublic(run_id=run_id, points=_points(service, run_id, since_step))


@router.get("/runs/{run_id}/metrics.csv", response_class=Response)
async def get_metrics_csv(run_id: str, service: ServiceDep) -> Response:
    out = io.StringIO()
    writer = csv.writer(out)
    table = PointCsv(_points(service, run_id))
    writer.writerow(table.columns)
    writer.writerows(table.rows())
    return Response(
        out.getvalue(),
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
        raise HTTPException(422, "runs: give at least one run id, e.g. ?runs=abc,def")
    if len(ids) > MAX_RUNS_PER_REQUEST:
        raise HTTPException(422, f"runs: at most {MAX_RUNS_PER_REQUEST} runs at once")
    return ids


RunsQuery = Annotated[str, Query(description="Comma-separated run ids", max_length=2000)]


# A CNN point's diagnostics are ~7.5 KB; the page polls compare while runs train
# and reads only the summaries, so they come only when asked for.
_WITHOUT_DIAGNOSTICS = {"runs": {"__all__": {"points": {"__all__": {"diagnostics"}}}}}
# Likewise the experiment's export: the page reloads it every few seconds while runs end
# for the seeds' curves, which need no diagnostics (its panel of cell means reads
# /diagnostics, the means computed here); a download asks for them.
_CURVES_WITHOUT_DIAGNOSTICS = {"curves": {"__all__": {"diagnostics"}}}
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
        points = _points(service, run_id)
        summaries[run_id] = summarize(run, points)
        items.append(RunComparison(run=run, points=points, summary=summaries[run_id]))
    result = CompareResult(runs=items, pairs=pair_speedups([i.run for i in items], summaries))
    exclude = None if diagnostics else _WITHOUT_DIAGNOSTICS
    return Response(result.model_dump_json(exclude=exclude), media_type="application/json")


@router.get("/export", response_class=Response)
async def export(
    runs: RunsQuery, service: ServiceDep, format: Literal["csv", "json"] = "csv"
) -> Response:
    selected = [(service.get(i), _points(service, i)) for i in _run_ids(runs)]
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
    out = io.StringIO()
    writer = csv.writer(out)
    # One table for every run: the diagnostics' columns are those of all of them.
    table = PointCsv(p for _, points in selected for p in points)
    writer.writerow(["run_id", "label", *CONFIG_COLUMNS, *table.columns])
    rows = table.rows()
    for run, points in selected:
        config = run.config.model_dump()
        prefix = [run.id, run.label, *(config[c] for c in CONFIG_COLUMNS)]
        writer.writerows([*prefix, *next(rows)] for _ in points)
    return Response(out.getvalue(), media_type="text/csv", headers=headers)


# -- experiments ---------------------------------------------------------------------


@router.post("/experiments", status_code=status.HTTP_201_CREATED, response_model=ExperimentPublic)
async def create_experiment(
    design: ExperimentCreate, experiments: ExperimentsDep
) -> ExperimentPublic:
    return experiments.create(design)


@router.get("/experiments", response_model=ExperimentList)
async def list_experiments(experiments: ExperimentsDep) -> ExperimentList:
    return ExperimentList(items=experiments.list())


@router.post("/experiments/plan", response_model=ExperimentPlan)
async def plan_experiment(design: ExperimentCreate, experiments: ExperimentsDep) -> ExperimentPlan:
    """Check a design and say what it would start (runs, estimated time) without starting it:
    a bad design gets the same 422 as `POST /api/experiments`."""
    return experiments.plan(design)


@router.get("/experiments/presets", response_model=PresetList)
async def list_presets(experiments: ExperimentsDep) -> PresetList:
    return PresetList(items=experiments.presets())


@router.get("/experiments/{experiment_id}", response_model=ExperimentPublic)
async def get_experiment(experiment_id: str, experiments: ExperimentsDep) -> ExperimentPublic:
    return experiments.get(experiment_id)


@router.post("/experiments/{experiment_id}/cancel", status_code=status.HTTP_202_ACCEPTED)
async def cancel_experiment(experiment_id: str, experiments: ExperimentsDep) -> ExperimentPublic:
    return experiments.cancel(experiment_id)


@router.post("/experiments/{experiment_id}/resume", status_code=status.HTTP_202_ACCEPTED)
async def resume_experiment(experiment_id: str, experiments: ExperimentsDep) -> ExperimentPublic:
    """Queue every interrupted or failed run of the experiment again."""
    return experiments.resume(experiment_id)


@router.delete("/experiments/{experiment_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_experiment(experiment_id: str, experiments: ExperimentsDep) -> Response:
    experiments.delete(experiment_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/experiments/{experiment_id}/export",
    response_class=Response,
    responses={200: {"model": ExperimentExport}},
)
async def export_experiment(
    experiment_id: str,
    experiments: ExperimentsDep,
    format: Literal["csv", "json"] = "json",
    part: Literal["runs", "curves"] = "runs",
    diagnostics: DiagnosticsFlag = False,
) -> Response:
    """JSON: the experiment, one row per run and the curves in long form (their points'
    diagnostics only when asked for). CSV: one of the two tables, chosen by `part`."""
    name = f"bnlab-experiment-{experiment_id}"
    if format == "json":
        exclude = None if diagnostics else _CURVES_WITHOUT_DIAGNOSTICS
        body = experiments.export(experiment_id).model_dump_json(exclude=exclude)
        headers = {"Content-Disposition": f'attachment; filename="{name}.json"'}
        return Response(body, media_type="application/json", headers=headers)
    body = experiments.export_csv(experiment_id, part)
    headers = {"Content-Disposition": f'attachment; filename="{name}-{part}.csv"'}
    return Response(body, media_type="text/csv", headers=headers)


@router.get("/experiments/{experiment_id}/diagnostics", response_model=ExperimentDiagnostics)
async def experiment_diagnostics(
    experiment_id: str,
    experiments: ExperimentsDep,
    layer: Annotated[
        str | None,
        Query(max_length=100, description="One layer (e.g. fc1) instead of every layer"),
    ] = None,
) -> ExperimentDiagnostics:
    """Inside the network, per cell and arm: the seed means of every diagnostics series
    at each evaluation step, with the number of runs behind each."""
    try:
        return experiments.diagnostics(experiment_id, layer)
    except UnknownLayer as exc:
        raise HTTPException(422, f"layer: {exc}") from None


@router.get("/health", response_model=Health)
async def health(service: ServiceDep, settings: SettingsDep) -> Health:
    try:
        tf_version = metadata.version("tensorflow")
    except metadata.PackageNotFoundError:
        tf_version = None
    devices = [f"GPU:{g}" for g in settings.gpus] or ["CPU"]
    return Health(
        tensorflow=tf_version,
        devices=devices,
        workers=WorkerLoad(busy=service.executor.busy(), total=service.executor.capacity),
        queue=service.queue_length(),
        executor=service.executor.kind,
        cluster=service.executor.cluster(),
    )
