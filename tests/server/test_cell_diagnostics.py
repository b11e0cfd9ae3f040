"""An experiment's cell means inside the network (bnlab.server.experiments.cell_means), in-process:
the real experiment service on a real SQLite file, its runs reporting made-up diagnostics
through a fake executor (test_scheduler.py's), each mean checked against NumPy over the
points the runs sent. Among the runs: one without diagnostics, one that diverges (its
last point's values are not finite), one whose histogram bins differ from its seeds',
and one that has not evaluated yet. The route, through a real server, is in
test_experiments_api.py."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from bnlab.model.events import Diagnostics, Distribution, Landscape, LayerDiagnostics
from bnlab.server.experiments import cell_means
from bnlab.server.experiments.cell_means import (
    DISTRIBUTIONS,
    LANDSCAPE_MEASURES,
    LAYER_MEASURES,
    NETWORK_MEASURES,
    PERCENTILES,
    DistributionMeans,
    LandscapeMeans,
    LayerMeans,
    RunDiagnostics,
    StepMeans,
    UnknownLayer,
    stored_diagnostics,
    summarize_arm,
)
from bnlab.server.experiments.design import ExperimentCreate
from bnlab.server.experiments.service import ExperimentService
from bnlab.server.live.hub import Hub
from bnlab.server.runs.service import NotFound, RunService
from bnlab.server.status import Outcome
from bnlab.server.storage.store import Store
from tests.server.fakes import FakeExecutor, evaluation

pytestmark = pytest.mark.anyio
# Two cells x three seeds x two arms = 12 runs; the second cell measures at full.
DESIGN = ExperimentCreate(
    base={"arch": "mlp", "steps": 20, "eval_every": 10},
    vary={"diagnostics": ["basic", "full"]},
    seeds=3,
)
STEPS = (0, 10, 20)
LAYERS = ("fc1", "fc2")
EDGES = [-2.0, -1.0, 0.0, 1.0, 2.0]
OTHER_EDGES = [-4.0, -2.0, 0.0, 2.0, 4.0]
# (cell, seed, arm) of the runs that differ
OFF = (0, 2, "bn")  # evaluates without diagnostics
DIVERGES = (0, 1, "no_bn")  # its step-20 values are not finite, then it diverges
OWN_BINS = (0, 0, "no_bn")  # its histograms have bins of their own
WAITING = (1, 2, "no_bn")  # still running, no evaluation yet
NAN = math.nan


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def service(tmp_path):
    runs = RunService(Store(tmp_path / "bnlab.db"), FakeExecutor(12), Hub(), 300)
    experiments = ExperimentService(runs)
    await runs.start()
    yield experiments
    await runs.stop()
    runs.store.close()


def made_up(rng: np.random.Generator, place: tuple[int, int, str], step: int) -> Diagnostics:
    cell, _, arm = place
    bn, full = arm == "bn", cell == 1
    broken = place == DIVERGES and step == 20
    edges = OTHER_EDGES if place == OWN_BINS else EDGES

    def distribution() -> Distribution:
        p15, p50, p85 = np.sort(rng.normal(size=3))
        return Distribution(
            p15=p15,
            p50=NAN if broken else p50,
            p85=p85,
            edges=edges,
            counts=rng.integers(0, 50, size=len(edges) - 1).tolist(),
        )

    def value() -> float:
        return float(rng.uniform(0.1, 2.0))

    return Diagnostics(
        level="full" if full else "basic",
        layers=[
            LayerDiagnostics(
                name=name,
                pre_bn=distribution() if bn else None,
                pre_activation=distribution(),
                grad_norm=NAN if broken else value(),
                weight_norm=value(),
                effective_step=math.inf if broken else value(),
                bn_gap=value() if bn else None,
                ics_distance=value() if full and step != 10 else None,
                ics_cosine=value() if full and step != 10 else None,
            )
            for name in LAYERS
        ],
        val_acc_batch_stats=value() if bn else None,
        val_acc_moving_stats=value() if bn else None,
        # full samples every other evaluation: steps 0 and 20
        landscape=Landscape(
            step_multiples=[0.5, 1.0],
            losses=[value(), value()],
            grad_changes=[value(), value()],
            loss_range=value(),
            grad_predictiveness=NAN if broken else value(),
            beta_smoothness=value(),
        )
        if full and step != 10
        else None,
    )


@pytest.fixture
async def experiment(service) -> tuple[str, dict[tuple[int, int, str], list[tuple]]]:
    """The experiment, with what each run sent: place -> [(step, diagnostics or None)]."""
    created = service.create(DESIGN)
    executor = service.runs.executor
    cells = DESIGN.cells()
    rng = np.random.default_rng(17)
    sent: dict[tuple[int, int, str], list[tuple]] = {}
    for run in created.runs:
        place = (cells.index({"diagnostics": run.config.diagnostics}), run.config.seed)
        place = (*place, "bn" if run.config.batch_norm else "no_bn")
        sent[place] = []
        if place == WAITING:
            continue
        for step in STEPS:
            diagnostics = None if place == OFF else made_up(rng, place, step)
            sent[place].append((step, diagnostics))
            executor.report(run.id, evaluation(step, diagnostics))
        if place == DIVERGES:
            executor.end(run.id, Outcome.DIVERGED)
        else:
            executor.complete(run.id)
    await executor.settled()
    return created.id, sent


def numpy_mean(values: list[float | None]) -> dict[str, Any] | None:
    """What the API should say of these values: their finite mean and how many, or None."""
    x = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    finite = x[np.isfinite(x)]
    return (
        {"mean": pytest.approx(float(np.mean(finite))), "n": len(finite)} if len(finite) else None
    )


def dig(diagnostics: Diagnostics, path: tuple[str, ...]) -> Any:
    found: Any = diagnostics
    for key in path:
        if key in LAYERS:
            found = next(x for x in found.layers if x.name == key)
        else:
            found = getattr(found, key, None)
        if found is None:
            return None
    return found


def series_paths(layers: tuple[str, ...]) -> list[tuple[str, ...]]:
    paths = [("val_acc_batch_stats",), ("val_acc_moving_stats",)]
    paths += [("landscape", k) for k in ("loss_range", "grad_predictiveness", "beta_smoothness")]
    for name in layers:
        paths += [
            (name, which, p)
            for which in ("pre_bn", "pre_activation")
            for p in ("p15", "p50", "p85")
        ]
        paths += [
            (name, key)
            for key in (
                "grad_norm",
                "weight_norm",
                "effective_step",
                "bn_gap",
                "ics_distance",
                "ics_cosine",
            )
        ]
    return paths


def served(step: dict[str, Any], path: tuple[str, ...]) -> Any:
    found: Any = step
    for key in path:
        if key in LAYERS:
            found = next((x for x in found["layers"] if x["name"] == key), None)
        else:
            found = found.get(key)
        if found is None:
            return None
    return found


async def test_each_arms_means_are_numpys_over_the_runs_that_recorded_each_value(
    service, experiment
):
    experiment_id, sent = experiment
    answer = service.diagnostics(experiment_id).model_dump(mode="json")
    assert answer["layers"] == list(LAYERS) and answer["layer"] is None
    assert [c["factors"] for c in answer["cells"]] == DESIGN.cells()
    for cell_index, cell in enumerate(answer["cells"]):
        for arm_name, arm in cell["arms"].items():
            seeds = [sent[(cell_index, seed, arm_name)] for seed in range(3)]
            recorded = [points for points in seeds if any(d for _, d in points)]
            assert arm["n"] == 3
            assert arm["recorded"] == len(recorded)
            assert arm["level"] == ("full" if cell_index == 1 else "basic")
            assert [s["step"] for s in arm["steps"]] == list(STEPS)
            for step in arm["steps"]:
                at = [d for points in recorded for s, d in points if s == step["step"]]
                assert step["n"] == len(at)
                for path in series_paths(LAYERS):
                    want = numpy_mean([dig(d, path) for d in at])
                    assert served(step, path) == want, (cell_index, arm_name, step["step"], path)

    bn, no_bn = answer["cells"][0]["arms"]["bn"], answer["cells"][0]["arms"]["no_bn"]
    # Not recorded: counted out, not averaged in as zeros.
    assert (bn["recorded"], bn["not_recorded"]) == (2, 1)
    assert all(step["n"] == 2 for step in bn["steps"])
    # Diverged: in the arm's count, and its non-finite values out of their means, with n.
    assert no_bn["runs"] == {"completed": 2, "diverged": 1}
    last = no_bn["steps"][-1]
    assert last["n"] == 3 and served(last, ("fc1", "grad_norm"))["n"] == 2
    assert served(last, ("fc1", "effective_step"))["n"] == 2
    assert served(last, ("fc1", "weight_norm"))["n"] == 3
    # Histograms: as fractions, over the runs with the arm's common bins; the diverging
    # run's NaN distribution (no median) adds nothing.
    assert no_bn["edges"]["fc1"] == {"pre_bn": None, "pre_activation": EDGES}
    own = [s for s in range(3) if (0, s, "no_bn") != OWN_BINS]
    for step in no_bn["steps"]:
        histogram = served(step, ("fc2", "pre_activation"))
        counts = np.array(
            [
                dig(d, ("fc2", "pre_activation")).counts
                for s in own
                for t, d in sent[(0, s, "no_bn")]
                if t == step["step"] and not ((0, s, "no_bn") == DIVERGES and t == 20)
            ],
            dtype=np.float64,
        )
        assert histogram["fractions_n"] == len(counts) == (1 if step["step"] == 20 else 2)
        assert histogram["fractions"] == pytest.approx(
            list((counts / counts.sum(axis=1, keepdims=True)).mean(axis=0))
        )
    # full: the landscape only where sampled; a run still waiting for its first evaluation
    # is in neither count.
    full_no_bn = answer["cells"][1]["arms"]["no_bn"]
    assert full_no_bn["runs"] == {"completed": 2, "running": 1}
    assert (full_no_bn["recorded"], full_no_bn["not_recorded"]) == (2, 0)
    assert [s["landscape"] and s["landscape"]["n"] for s in full_no_bn["steps"]] == [2, None, 2]


async def test_one_layer_is_served_alone_and_an_unknown_one_is_refused_by_name(service, experiment):
    experiment_id, _ = experiment
    every = service.diagnostics(experiment_id)
    one = service.diagnostics(experiment_id, "fc2")
    assert one.layers == list(LAYERS) and one.layer == "fc2"  # which layers exist, still
    for cell_every, cell_one in zip(every.cells, one.cells, strict=True):
        for arm in ("bn", "no_bn"):
            whole, alone = cell_every.arms[arm], cell_one.arms[arm]
            assert set(alone.edges) == {"fc2"}
            for a, b in zip(whole.steps, alone.steps, strict=True):
                assert [x.name for x in b.layers] == ["fc2"]
                assert b.layers[0] == a.layers[1]
                assert b.model_dump(exclude={"layers"}) == a.model_dump(exclude={"layers"})
    with pytest.raises(UnknownLayer, match=r"'fc9'.*fc1, fc2"):
        service.diagnostics(experiment_id, "fc9")
    with pytest.raises(NotFound):
        service.diagnostics("nope")


def test_points_stored_with_one_set_of_edges_per_layer_still_average():
    """Points stored before each distribution kept its own bins had one `edges` per layer."""
    old = {
        "level": "basic",
        "layers": [
            {
                "name": "fc1",
                "edges": EDGES,
                "pre_bn": None,
                "pre_activation": {"p15": -1.0, "p50": 0.0, "p85": 1.0, "counts": [1, 3, 3, 1]},
                "grad_norm": 0.5,
                "weight_norm": 4.0,
                "effective_step": 0.01,
                "bn_gap": None,
            }
        ],
        "val_acc_batch_stats": None,
    }
    document = stored_diagnostics(json.dumps(old))
    assert document["layers"][0]["pre_activation"]["edges"] == EDGES
    run = RunDiagnostics(factors={}, arm="no_bn", status="completed", points=[(0, document)])
    arm = summarize_arm([run], ["fc1"])
    assert arm.edges["fc1"].pre_activation == EDGES
    assert arm.steps[0].layers[0].pre_activation.fractions == [0.125, 0.375, 0.375, 0.125]


def test_the_means_have_a_field_for_every_number_the_diagnostics_record():
    """A measure added to the contract (bnlab.model.events) must reach the means."""
    assert set(LayerMeans.model_fields) == {"name", *DISTRIBUTIONS, *LAYER_MEASURES}
    assert set(DistributionMeans.model_fields) == {*PERCENTILES, "fractions", "fractions_n"}
    assert set(LandscapeMeans.model_fields) == {"n", *LANDSCAPE_MEASURES}
    assert set(StepMeans.model_fields) == {"step", "n", "layers", "landscape", *NETWORK_MEASURES}
    assert len(LAYER_MEASURES) == 6 and len(NETWORK_MEASURES) == 2


@pytest.mark.parametrize("flip", [False, True])
def test_layers_of_two_networks_keep_network_order_whatever_comes_first(flip):
    """An experiment varying `arch`: each layer goes after the one it follows in its
    own network, so the picker's order does not depend on which run SQLite read first."""
    networks = [["conv1", "conv2", "fc1"], ["fc1", "fc2", "fc3"]]
    order = cell_means.layer_order(networks[::-1] if flip else networks)
    assert order == ["conv1", "conv2", "fc1", "fc2", "fc3"]


def test_a_diverged_distribution_adds_nothing_to_the_histogram():
    """A diverging run's last distribution has NaN values: no percentiles, and its
    NaNs counted in the last bin. Averaged in, they would draw a saturated layer."""
    healthy = {"p15": -1.0, "p50": 0.0, "p85": 1.0, "edges": [0.0, 1.0, 2.0], "counts": [3, 1]}
    diverged = {"p15": None, "p50": None, "p85": None, "edges": [0.0, 1.0, 2.0], "counts": [0, 4]}
    means = cell_means._distribution([healthy, diverged], [0.0, 1.0, 2.0])
    assert means.fractions == [0.75, 0.25] and means.fractions_n == 1
    assert means.p50.mean == 0.0 and means.p50.n == 1
