"""The experiment service, in-process: a real store on a SQLite file, the real run
service and a fake executor (tests/server/test_scheduler.py's), so each test decides
when a run reports and ends. The same with real workers over HTTP and websockets is
in test_experiments_api.py."""

from __future__ import annotations

import asyncio
import csv
import io
import json

import pytest

from bnlab.model import events
from bnlab.server.experiments.analysis import analyze_export
from bnlab.server.experiments.contrasts import Claim
from bnlab.server.experiments.design import ExperimentCreate
from bnlab.server.experiments.service import (
    ExperimentService,
    TooManySeeds,
    experiment_topic,
    queue_order,
)
from bnlab.server.live.hub import Hub
from bnlab.server.live.messages import server_message
from bnlab.server.runs.service import Conflict, NotFound, QueueFull, RunService
from bnlab.server.status import Outcome
from bnlab.server.storage.store import Store
from tests.server.fakes import FakeExecutor, evaluation

pytestmark = pytest.mark.anyio
# Two cells x two seeds x two arms = 8 runs.
DESIGN = ExperimentCreate(
    label="lr",
    base={"arch": "mlp", "steps": 20, "eval_every": 10},
    vary={"learning_rate": [0.01, 0.1]},
    seeds=2,
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def make_service(tmp_path):
    made: list[RunService] = []

    async def make(
        capacity: int = 1, max_queued: int = 300
    ) -> tuple[ExperimentService, FakeExecutor]:
        executor = FakeExecutor(capacity)
        runs = RunService(Store(tmp_path / "bnlab.db"), executor, Hub(), max_queued)
        experiments = ExperimentService(runs)
        await runs.start()
        made.append(runs)
        return experiments, executor

    yield make
    for runs in made:
        await runs.stop()
        runs.store.close()


def finish(executor: FakeExecutor, run_id: str, accuracy: float = 0.97) -> None:
    """The run evaluates at steps 10 and 20, is tested, and completes."""
    for step in (10, 20):
        executor.report(run_id, evaluation(step))
    executor.report(run_id, events.TestEvent(test_loss=0.1, test_accuracy=accuracy, log_loss=0.1))
    executor.end(run_id, Outcome.COMPLETED)


async def finish_all_running(executor: FakeExecutor) -> None:
    """Finish every run, started or queued, as each gets a worker."""
    while executor.running:
        for run_id in list(executor.running):
            finish(executor, run_id)
        await executor.settled()


async def finish_all(experiments: ExperimentService, executor: FakeExecutor, eid: str) -> None:
    await finish_all_running(executor)
    assert experiments.get(eid).status == "completed"


def test_runs_are_queued_seed_by_seed_each_cell_bn_first():
    order = [(cell, run.seed, run.arm) for cell, run in queue_order(DESIGN)]
    assert order == [
        (0, 0, "bn"),
        (0, 0, "no_bn"),
        (1, 0, "bn"),
        (1, 0, "no_bn"),
        (0, 1, "bn"),
        (0, 1, "no_bn"),
        (1, 1, "bn"),
        (1, 1, "no_bn"),
    ]


async def test_an_experiment_queues_all_its_runs_at_once_in_the_interleaved_order(make_service):
    experiments, executor = await make_service(capacity=1)
    experiment = experiments.create(DESIGN)
    assert experiment.status == "running"  # the first run started at once
    assert len(experiment.runs) == 8
    assert executor.submitted == [experiment.runs[0].id]
    placed = [(r.config.learning_rate, r.config.seed, r.config.batch_norm) for r in experiment.runs]
    assert placed == [
        (0.01, 0, True),
        (0.01, 0, False),
        (0.1, 0, True),
        (0.1, 0, False),
        (0.01, 1, True),
        (0.01, 1, False),
        (0.1, 1, True),
        (0.1, 1, False),
    ]
    assert {r.experiment_id for r in experiment.runs} == {experiment.id}
    assert experiment.progress.runs == {"running": 1, "queued": 7}
    # Twins share everything but batch norm.
    bn, no_bn = experiment.runs[0].config, experiment.runs[1].config
    assert bn.twin() == no_bn


async def test_each_runs_label_names_its_cell_even_at_the_recipes_values(make_service):
    experiments, _ = await make_service(capacity=1)
    design = ExperimentCreate(
        label="init",
        base={"arch": "mlp", "steps": 20, "eval_every": 10},
        vary={"init_scale": [1.0, 100.0], "dropout": [0.0, 0.5]},
        seeds=1,
    )
    labels = {r.label for r in experiments.create(design).runs}
    # init scale 1 and dropout 0.5 are the recipe's: a run's own label would omit them.
    assert "init · BN · mlp · adagrad 0.01 · init scale 1 · dropout rate 0.5 · seed 0" in labels
    assert "init · no-BN · mlp · adagrad 0.01 · init scale 100 · dropout rate 0 · seed 0" in labels


async def test_an_experiment_is_queued_until_a_run_starts(make_service):
    experiments, executor = await make_service(capacity=1)
    blocker = experiments.runs.create_run(DESIGN.runs()[0].config)
    experiment = experiments.create(DESIGN)
    assert experiment.status == "queued"
    finish(executor, blocker.id)
    await executor.settled()
    assert experiments.get(experiment.id).status == "running"


async def test_cells_are_computed_from_the_finished_runs_and_complete_at_the_end(make_service):
    experiments, executor = await make_service(capacity=2)
    eid = experiments.create(DESIGN).id
    # Halfway: seed 0 of both cells has finished, seed 1 has not started.
    for _ in range(2):
        for run_id in list(executor.running):
            finish(executor, run_id)
        await executor.settled()
    half = experiments.get(eid)
    assert half.status == "running"
    assert [c.factors for c in half.cells] == [{"learning_rate": 0.01}, {"learning_rate": 0.1}]
    for cell in half.cells:
        assert cell.arms["bn"].n == 2 and cell.arms["bn"].n_finished == 1
        assert cell.effect.n_pairs == 1
    await finish_all(experiments, executor, eid)
    done = experiments.get(eid)
    for cell in done.cells:
        assert cell.arms["bn"].n_finished == cell.arms["no_bn"].n_finished == 2
        assert cell.arms["bn"].test_accuracy.mean == pytest.approx(0.97)
        assert cell.effect.n_pairs == 2
        assert cell.effect.verdict == "not_enough_seeds"  # two seeds can never reach p < 0.05
    assert done.progress.runs == {"completed": 8}
    assert done.progress.steps == done.progress.total_steps == 8 * 20


async def test_a_plan_counts_the_runs_stores_nothing_and_learns_the_speed(make_service):
    experiments, executor = await make_service(capacity=2)
    first = experiments.plan(DESIGN)
    assert (first.cells, first.runs, first.total_steps, first.workers) == (2, 8, 160, 2)
    assert first.estimated_seconds is None and first.basis == {}  # nothing finished here yet
    assert experiments.list() == [] and experiments.runs.queue_length() == 0
    eid = experiments.create(DESIGN).id
    await finish_all(experiments, executor, eid)
    second = experiments.plan(DESIGN)
    assert second.basis == {"mlp": 8}
    assert second.estimated_seconds is not None and second.estimated_seconds >= 0


async def test_a_finished_experiment_is_completed_whatever_its_runs_outcomes(make_service):
    experiments, executor = await make_service(capacity=8)
    experiment = experiments.create(DESIGN)
    outcomes = [Outcome.DIVERGED, Outcome.FAILED] + [Outcome.COMPLETED] * 6
    for run, outcome in zip(experiment.runs, outcomes, strict=True):
        if outcome is Outcome.COMPLETED:
            finish(executor, run.id)
        else:
            executor.end(run.id, outcome, "boom")
    await executor.settled()
    done = experiments.get(experiment.id)
    assert done.status == "completed"
    assert done.cells[0].arms["bn"].n_diverged == 1


async def test_cancel_stops_every_active_run_and_keeps_the_finished(make_service):
    experiments, executor = await make_service(capacity=1)
    experiment = experiments.create(DESIGN)
    first, second = experiment.runs[0].id, experiment.runs[1].id
    finish(executor, first)
    await executor.settled()
    cancelled = experiments.cancel(experiment.id)
    assert executor.cancelled == [second]  # the running one is asked to stop
    statuses = [r.status for r in cancelled.runs]
    assert statuses == ["completed", "running"] + ["cancelled"] * 6
    assert cancelled.status == "running"
    executor.end(second, Outcome.CANCELLED)
    await executor.settled()
    assert experiments.get(experiment.id).status == "cancelled"
    assert executor.submitted == [first, second]  # nothing else ever started
    with pytest.raises(Conflict, match="nothing to cancel"):
        experiments.cancel(experiment.id)


async def test_resume_queues_every_interrupted_or_failed_run_and_finishes(make_service):
    experiments, executor = await make_service(capacity=1)
    experiment = experiments.create(DESIGN)
    executor.end(experiment.runs[0].id, Outcome.FAILED, "boom")
    await executor.settled()
    finish(executor, experiment.runs[1].id)
    await executor.settled()
    # A new server on the same file: what was queued or running is interrupted.
    await experiments.runs.stop()
    again, executor = await make_service(capacity=1)
    interrupted = again.get(experiment.id)
    assert interrupted.status == "interrupted"
    assert [r.status for r in interrupted.runs[:3]] == ["failed", "completed", "interrupted"]
    resumed = again.resume(experiment.id)
    assert resumed.status == "running"
    assert resumed.runs[1].status == "completed"  # finished runs are left alone
    assert executor.submitted == [experiment.runs[0].id]  # the failed one first, in order
    await finish_all(again, executor, experiment.id)
    assert len(executor.submitted) == 7
    with pytest.raises(Conflict, match="no interrupted or failed runs"):
        again.resume(experiment.id)


async def test_an_experiment_run_never_has_the_machine_to_itself(make_service):
    # Thread counts change float rounding: even resumed on an idle server, a run of an
    # experiment trains on its worker's share, as its uninterrupted twin would have.
    experiments, executor = await make_service(capacity=2)
    experiment = experiments.create(DESIGN)
    executor.end(experiment.runs[0].id, Outcome.FAILED, "boom")
    await executor.settled()
    await finish_all_running(executor)
    experiments.resume(experiment.id)
    assert executor.submitted[-1] == experiment.runs[0].id and executor.running == [
        experiment.runs[0].id
    ]
    assert not any(executor.alone.values())


async def test_an_experiment_that_does_not_fit_the_queue_stores_nothing(make_service):
    experiments, _ = await make_service(capacity=1, max_queued=7)
    with pytest.raises(QueueFull):
        experiments.create(DESIGN)
    assert experiments.list() == []
    assert experiments.store.list_runs()[1] == 0


async def test_delete_is_refused_while_a_run_is_active_then_removes_everything(make_service):
    experiments, executor = await make_service(capacity=1)
    experiment = experiments.create(DESIGN)
    with pytest.raises(Conflict, match="active run"):
        experiments.delete(experiment.id)
    await finish_all(experiments, executor, experiment.id)
    with pytest.raises(Conflict, match="delete the experiment"):  # its cell would lose a seed
        experiments.runs.delete(experiment.runs[0].id)
    feed = experiments.hub.subscribe(experiment_topic(experiment.id))
    experiments.delete(experiment.id)
    assert json.loads(feed.queue.get_nowait()[1]) == {"type": "deleted", "id": experiment.id}
    assert experiments.list() == []
    assert experiments.store.list_runs()[1] == 0
    assert experiments.store.db.execute("SELECT COUNT(*) FROM points").fetchone()[0] == 0
    assert set(executor.discarded) >= {r.id for r in experiment.runs}
    with pytest.raises(NotFound):
        experiments.get(experiment.id)


async def test_the_stream_numbers_every_update_and_throttles_progress(make_service):
    experiments, executor = await make_service(capacity=1)
    experiment = experiments.create(DESIGN)
    feed = experiments.hub.subscribe(experiment_topic(experiment.id))
    run_id = experiment.runs[0].id
    for step in range(1, 6):  # five progress reports within a second: one update
        executor.report(
            run_id, events.ProgressEvent(step=step, total_steps=20, train_loss=0.5, elapsed=0.1)
        )
    await executor.settled()
    finish(executor, run_id)
    await executor.settled()
    messages = []
    while not feed.queue.empty():
        seq, text = feed.queue.get_nowait()
        message = server_message.validate_json(text)
        assert message.seq == seq
        messages.append(message)
    seqs = [m.seq for m in messages]
    assert seqs == list(range(experiment.last_seq + 1, experiment.last_seq + 1 + len(seqs)))
    assert [m.type for m in messages].count("experiment_progress") == 1
    # Whole-experiment updates as the next run starts and the first one ends.
    updates = [m.experiment for m in messages if m.type == "experiment"]
    assert [[r.status for r in u.runs[:2]] for u in updates] == [
        ["running", "running"],
        ["completed", "running"],
    ]
    assert updates[0].cells[0].arms["bn"].n_finished == 0
    assert updates[1].cells[0].arms["bn"].n_finished == 1
    # Numbers are stored: a new service continues after them.
    assert experiments.store.get_experiment(experiment.id)["last_seq"] == seqs[-1]


async def test_export_has_one_row_per_run_and_the_curves_in_long_form(make_service):
    experiments, executor = await make_service(capacity=2)
    experiment = experiments.create(DESIGN)
    await finish_all(experiments, executor, experiment.id)
    export = experiments.export(experiment.id)
    assert [r.run_id for r in export.runs] == [r.id for r in experiment.runs]
    assert export.runs[2].factors == {"learning_rate": 0.1}
    assert export.runs[2].seed == 0 and export.runs[2].arm == "bn"
    assert export.runs[0].summary.test_accuracy == 0.97
    assert len(export.curves) == 8 * 2
    runs = list(csv.DictReader(io.StringIO(experiments.export_csv(experiment.id, "runs"))))
    assert len(runs) == 8
    assert runs[3]["learning_rate"] == "0.1" and runs[3]["arm"] == "no_bn"
    assert runs[3]["status"] == "completed" and runs[3]["test_accuracy"] == "0.97"
    assert {"steps_to_0.98", "best_val_acc", "seed"} <= set(runs[0])
    curves = list(csv.DictReader(io.StringIO(experiments.export_csv(experiment.id, "curves"))))
    assert len(curves) == 16
    assert [c["step"] for c in curves[:2]] == ["10", "20"]
    assert curves[0]["val_acc"] == "0.9" and curves[0]["run_id"] == experiment.runs[0].id


async def test_unknown_experiments_are_not_found(make_service):
    experiments, _ = await make_service()
    for act in (experiments.get, experiments.cancel, experiments.resume, experiments.delete):
        with pytest.raises(NotFound):
            act("nope")
    await asyncio.sleep(0)


# --- the claim, the export re-analysed, more seeds (issue #26) ---------------------------

CLAIMED = DESIGN.model_copy(
    update={
        "claim": Claim(
            statement="BN helps at the small rate",
            contrasts=[{"kind": "effect", "cell": {"learning_rate": 0.01}}],
        )
    }
)


async def finish_by_arm(executor: FakeExecutor, experiments: ExperimentService, eid: str) -> None:
    """Finish every run: BN at 0.97 + 0.001 x seed, no-BN at 0.96."""
    runs = {r.id: r.config for r in experiments.get(eid).runs}
    while executor.running:
        for run_id in list(executor.running):
            config = runs.get(run_id) or experiments.runs.get(run_id).config
            finish(executor, run_id, 0.97 + 0.001 * config.seed if config.batch_norm else 0.96)
        await executor.settled()


async def test_the_claim_is_evaluated_provisional_while_live_and_the_export_reanalyses(
    make_service, tmp_path
):
    experiments, executor = await make_service(capacity=2)
    created = experiments.create(CLAIMED)
    assert created.design.claim == CLAIMED.claim
    assert created.claim is not None and created.claim.provisional
    assert created.claim.sentence.startswith("Provisional")
    await finish_by_arm(executor, experiments, created.id)
    final = experiments.get(created.id)
    assert final.status == "completed" and not final.claim.provisional
    (contrast,) = final.claim.contrasts
    # seeds 0 and 1 at the small rate: +1.0 and +1.1 points
    assert contrast.estimate == pytest.approx(0.0105)
    assert contrast.n_pairs == 2 and final.claim.verdict == "not_enough_seeds"
    assert all(c.effect.p_adjusted is not None for c in final.cells)

    export = experiments.export(created.id)
    assert export.experiment.design.claim == CLAIMED.claim
    assert [r.test_correct for r in export.runs[:2]] == [9700, 9600]
    path = tmp_path / "export.json"
    path.write_text(export.model_dump_json())
    design, analysis = analyze_export(path)
    assert design == final.design
    assert analysis.claim == final.claim and analysis.cells == final.cells

    # One run's result edited (the count and the accuracy together): the analysis follows.
    document = json.loads(path.read_text())
    bn_seed0 = document["runs"][0]
    assert (bn_seed0["factors"], bn_seed0["arm"], bn_seed0["seed"]) == (
        {"learning_rate": 0.01},
        "bn",
        0,
    )
    bn_seed0["summary"]["test_accuracy"] = 0.99
    bn_seed0["test_correct"] = None
    path.write_text(json.dumps(document))
    _, edited = analyze_export(path)
    assert edited.claim.contrasts[0].estimate == pytest.approx((0.03 + 0.011) / 2)
    assert edited.cells[0].effect.difference.mean == pytest.approx((0.03 + 0.011) / 2)
    assert edited.cells[1] == final.cells[1]


async def test_seeds_added_after_it_ends_are_queued_and_every_verdict_says_so(make_service):
    experiments, executor = await make_service(capacity=2)
    eid = experiments.create(CLAIMED).id
    with pytest.raises(Conflict, match="once it has ended"):
        experiments.add_seeds(eid, 1)
    await finish_by_arm(executor, experiments, eid)
    assert not experiments.get(eid).seeds_added_after_looking
    extended = experiments.add_seeds(eid, 5)
    assert extended.design.seeds == 7 and len(extended.runs) == 28
    new = extended.runs[8:]
    assert {r.config.seed for r in new} == {2, 3, 4, 5, 6}
    assert all(r.status in ("queued", "running") for r in new)
    assert extended.seeds_added_after_looking
    await finish_by_arm(executor, experiments, eid)
    final = experiments.get(eid)
    assert final.status == "completed" and final.claim.contrasts[0].n_pairs == 7
    # seven pairs, all BN ahead: enough for a family of one
    assert final.claim.verdict == "supported"
    assert "added after" in final.claim.sentence
    assert all("added after" in c.effect.sentence for c in final.cells)
    with pytest.raises(TooManySeeds, match="20"):
        experiments.add_seeds(eid, 14)
    # stored with the experiment: its row in the list says so too
    assert experiments.list()[0].seeds_added_after_looking


async def test_a_plan_warns_when_no_verdict_is_possible(make_service):
    experiments, _ = await make_service()
    sixteen = ExperimentCreate(
        base={"arch": "mlp", "steps": 20, "eval_every": 10},
        vary={"learning_rate": [0.01, 0.02, 0.05, 0.1], "init_scale": [0.1, 1.0, 10.0, 100.0]},
        seeds=6,
    )
    plan = experiments.plan(sixteen)
    assert plan.power.cells == 16 and not plan.power.cell.possible
    assert plan.power.cell.alpha == pytest.approx(0.05 / 16)
    assert plan.power.claim is None
    (warning,) = plan.warnings
    assert "16 cells" in warning and "6 seeds" in warning
    fine = experiments.plan(CLAIMED.model_copy(update={"seeds": 8}))
    assert fine.warnings == [] and fine.power.cell.dz is not None
    assert fine.power.claim is not None and fine.power.claim.possible
