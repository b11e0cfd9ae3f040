"""REST routes of the experiment resources: designs, presets, plans, exports and cell means.

Thin: validation in the design (`ExperimentCreate`), behaviour in the experiment service.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response, status

from ...experiments.cell_means import UnknownLayer
from ...experiments.design import ExperimentCreate
from ...experiments.schemas import (
    ExperimentDiagnostics,
    ExperimentExport,
    ExperimentList,
    ExperimentPlan,
    ExperimentPublic,
    PresetList,
    SeedsAdd,
)
from ...experiments.service import TooManySeeds
from ..deps import ExperimentsDep
from ..problems import invalid
from .runs import DiagnosticsFlag

router = APIRouter(prefix="/api")

# The page reloads the experiment's export every few seconds while runs end, for the
# seeds' curves, which need no diagnostics (its panel of cell means reads
# /diagnostics, the means computed here); a download asks for them.
_CURVES_WITHOUT_DIAGNOSTICS = {"curves": {"__all__": {"diagnostics"}}}


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


@router.post("/experiments/{experiment_id}/seeds", status_code=status.HTTP_202_ACCEPTED)
async def add_seeds(
    experiment_id: str, body: SeedsAdd, experiments: ExperimentsDep
) -> ExperimentPublic:
    """Add seeds to every cell of an ended experiment and queue their runs; its verdicts
    then say that seeds were added after looking."""
    try:
        return experiments.add_seeds(experiment_id, body.seeds)
    except TooManySeeds as exc:
        raise invalid(("body", "seeds"), str(exc)) from None


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
        raise invalid(("query", "layer"), str(exc)) from None
