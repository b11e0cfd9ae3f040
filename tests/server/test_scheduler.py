"""The run service's scheduler, in-process: a real store on a SQLite file and a
fake executor that follows the `Executor` protocol, so each test decides when a
run reports, ends or fails. The same behaviour with real worker processes is in
test_api.py and test_faults.py."""

from __future__ import annotations

import asyncio
import json

import pytest

from bnlab.model.config import RunConfig
from bnlab.model.events import StartEvent
from bnlab.server.live.hub import Hub
from bnlab.server.runs import service as runs
from bnlab.server.runs.service import Conflict, QueueFull, RunService, run_topic
from bnlab.server.status import Outcome, RunStatus
from bnlab.server.storage.store import Store, StoreError
from tests.server.fakes import FakeExecutor, evaluation

pytestmark = pytest.mark.anyio
CONFIG = RunConfig(arch="mlp", steps=20, eval_every=10)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def make_service(tmp_path):
    services: list[RunService] = []

    async def make(capacity: int = 1, max_queued: int = 10) -> tuple[RunService, FakeExecutor]:
        executor = FakeExecutor(capacity)
        service = RunService(Store(tmp_path / "bnlab.db"), executor, Hub(), max_queued)
        await service.start()
        services.append(service)
        return service, executor

    yield make
    for service in services:
        await service.stop()
        service.store.close()


async def eventually(predicate, timeout: float = 10.0) -> None:
    """Let the service's tasks run (retries included) until `predicate()` holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "never happened"
        await asyncio.sleep(0.01)


def status(service: RunService, run_id: str) -> RunStatus:
    return service.get(run_id).status


async def test_runs_start_in_the_order_they_were_created(make_service):
    service, executor = await make_service(capacity=1)
    a, b, c = (service.create_run(CONFIG).id for _ in range(3))
    assert executor.submitted == [a]
    assert [status(service, i) for i in (a, b, c)] == ["running", "queued", "queued"]
    assert service.queue_length() == 2

    executor.complete(a)
    await executor.settled()
    assert executor.submitted == [a, b]
    executor.end(b, Outcome.FAILED, "boom")
    await executor.settled()
    assert executor.submitted == [a, b, c]
    assert service.queue_length() == 0


async def test_no_more_runs_start_than_there_are_slots(make_service):
    service, executor = await make_service(capacity=2)
    ids = [service.create_run(CONFIG).id for _ in range(5)]
    assert executor.submitted == ids[:2]
    executor.complete(ids[1])  # the second ends first: one slot frees, one run starts
    await executor.settled()
    assert executor.submitted == ids[:3] and executor.busy() == 2
    for run_id in ids[:3]:
        if run_id in executor.running:
            executor.complete(run_id)
    await executor.settled()
    assert executor.submitted == ids
    assert [status(service, i) for i in ids] == ["completed"] * 3 + ["running"] * 2


async def test_only_a_lone_ungrouped_run_may_have_the_machine_to_itself(make_service):
    # What lets a process executor give a run alone every core rather than a slot's share.
    service, executor = await make_service(capacity=2)
    alone = service.create_run(CONFIG).id
    beside = service.create_run(CONFIG).id  # starts while the first trains
    assert executor.alone == {alone: True, beside: False}
    for run_id in (alone, beside):
        executor.complete(run_id)
    await executor.settled()
    # A comparison's twins are queued together and are grouped: never alone, even on
    # resume with nothing else to run, so both always train alike.
    _, twins = service.create_comparison(CONFIG, "pair")
    assert [executor.alone[twin.id] for twin in twins] == [False, False]
    executor.end(twins[0].id, Outcome.FAILED, "boom")
    executor.complete(twins[1].id)
    await executor.settled()
    service.resume(twins[0].id)
    assert executor.submitted[-1] == twins[0].id and executor.alone[twins[0].id] is False
    executor.complete(twins[0].id)
    await executor.settled()
    # Waiting behind two: it starts on a slot's share while either trains, alone once
    # both have ended.
    first, second, third = (service.create_run(CONFIG).id for _ in range(3))
    executor.complete(first)
    await executor.settled()
    assert executor.alone[third] is False
    executor.complete(second)
    executor.complete(third)
    fourth, fifth = (service.create_run(CONFIG).id for _ in range(2))
    await executor.settled()
    assert executor.alone[fourth] is True and executor.alone[fifth] is False


async def test_a_queued_run_is_cancelled_at_once_and_never_starts(make_service):
    service, executor = await make_service(capacity=1)
    first, waiting = service.create_run(CONFIG).id, service.create_run(CONFIG).id
    cancelled = service.cancel(waiting)
    assert cancelled.status == "cancelled" and cancelled.error == "cancelled before it started"
    assert executor.cancelled == [] and service.queue_length() == 0
    executor.complete(first)
    await executor.settled()
    assert executor.submitted == [first]


async def test_a_running_run_is_asked_to_stop_and_cancelled_when_it_has(make_service):
    service, executor = await make_service(capacity=1)
    run_id = service.create_run(CONFIG).id
    assert service.cancel(run_id).status == "running"  # until the worker says it stopped
    assert executor.cancelled == [run_id]
    executor.end(run_id, Outcome.CANCELLED)
    await executor.settled()
    assert status(service, run_id) == "cancelled"
    assert executor.discarded == [run_id]  # never resumed: its checkpoint goes
    with pytest.raises(Conflict, match="already cancelled"):
        service.cancel(run_id)


async def test_a_run_that_ends_without_test_metrics_fails(make_service):
    service, executor = await make_service()
    run_id = service.create_run(CONFIG).id
    executor.report(run_id, evaluation(0))
    executor.end(run_id, Outcome.COMPLETED)
    await executor.settled()
    run = service.get(run_id)
    assert run.status == "failed" and run.error == "the worker finished without test metrics"
    assert executor.discarded == []  # failed runs can be resumed


async def test_a_completed_run_keeps_its_test_metrics_and_drops_its_checkpoint(make_service):
    service, executor = await make_service()
    run_id = service.create_run(CONFIG).id
    executor.complete(run_id)
    await executor.settled()
    run = service.get(run_id)
    assert run.status == "completed" and run.test_metrics.test_accuracy == 0.97
    assert executor.discarded == [run_id]


async def test_each_outcome_becomes_its_status(make_service):
    service, executor = await make_service(capacity=3)
    ids = {o: service.create_run(CONFIG).id for o in (Outcome.DIVERGED, Outcome.FAILED)}
    for outcome, run_id in ids.items():
        executor.end(run_id, outcome, f"{outcome} here")
    await executor.settled()
    for outcome, run_id in ids.items():
        run = service.get(run_id)
        assert (run.status, run.error) == (outcome.status, f"{outcome} here")


async def failed_after_two_evaluations(make_service, reason: str):
    """A run that reported the evaluations at steps 0 and 10, then failed: resumable."""
    service, executor = await make_service(capacity=1)
    run_id = service.create_run(CONFIG).id
    for step in (0, 10):
        executor.report(run_id, evaluation(step))
    executor.end(run_id, Outcome.FAILED, reason)
    await executor.settled()
    return service, executor, run_id


async def test_a_failed_run_resumes_from_its_checkpoint(make_service):
    service, executor, run_id = await failed_after_two_evaluations(make_service, "killed")

    resumed = service.resume(run_id)
    assert resumed.status == "running" and resumed.error is None
    assert executor.submitted == [run_id, run_id]
    # The worker continues from its checkpoint at step 5: what came after is redone.
    executor.report(run_id, StartEvent(total_steps=20, device="CPU:0", parameters=1, first_step=5))
    await executor.settled()
    assert [p["step"] for p in service.store.points(run_id)] == [0]
    assert service.get(run_id).step == 5
    executor.complete(run_id)
    await executor.settled()
    assert status(service, run_id) == "completed"
    with pytest.raises(Conflict, match="only interrupted or failed runs can be resumed"):
        service.resume(run_id)


async def test_a_resumed_runs_repeated_evaluation_fills_a_lost_point_and_is_dropped_otherwise(
    make_service,
):
    # The worker saves its checkpoint after sending an evaluation, so a killed server
    # may have a checkpoint at step 20 without the point; a resumed run repeats the
    # checkpoint's evaluation (model/training.py).
    service, executor, run_id = await failed_after_two_evaluations(make_service, "killed")

    service.resume(run_id)  # from a checkpoint at 20 whose point never arrived
    executor.report(run_id, StartEvent(total_steps=30, device="CPU:0", parameters=1, first_step=20))
    executor.report(run_id, evaluation(20))
    await executor.settled()
    assert [p["step"] for p in service.store.points(run_id)] == [0, 10, 20]  # no gap
    kept = {row["step"]: row["seq"] for row in service.store.points(run_id)}

    executor.end(run_id, Outcome.FAILED, "killed again")
    await executor.settled()
    service.resume(run_id)  # from the same checkpoint: its point is stored this time
    executor.report(run_id, StartEvent(total_steps=30, device="CPU:0", parameters=1, first_step=20))
    executor.report(run_id, evaluation(20))
    await executor.settled()
    rows = {row["step"]: row["seq"] for row in service.store.points(run_id)}
    assert list(rows) == [0, 10, 20]  # the repeat was dropped: stored once
    assert rows == kept  # the same sequence numbers: nothing republished


async def test_a_resumed_run_waits_its_turn(make_service):
    service, executor = await make_service(capacity=1)
    first = service.create_run(CONFIG).id
    executor.end(first, Outcome.FAILED, "killed")
    await executor.settled()
    busy = service.create_run(CONFIG).id
    assert service.resume(first).status == "queued"
    executor.complete(busy)
    await executor.settled()
    assert executor.submitted == [first, busy, first]


async def test_a_full_queue_refuses_new_runs_and_comparisons(make_service):
    service, _ = await make_service(capacity=1, max_queued=2)
    for _ in range(3):  # one runs, two wait
        service.create_run(CONFIG)
    with pytest.raises(QueueFull, match=r"the queue is full \(2 runs waiting, at most 2\)"):
        service.create_run(CONFIG)
    with pytest.raises(QueueFull):
        service.create_comparison(CONFIG, None)
    assert service.store.list_runs()[1] == 3  # nothing half-created


async def test_a_comparison_needs_room_for_both_twins(make_service):
    service, _ = await make_service(capacity=1, max_queued=2)
    service.create_run(CONFIG)
    service.create_run(CONFIG)  # one place left in the queue
    with pytest.raises(QueueFull):
        service.create_comparison(CONFIG, "pair")
    service.cancel(service.store.list_runs(RunStatus.QUEUED)[0][0]["id"])
    comparison_id, twins = service.create_comparison(CONFIG, "pair")
    assert [t.label for t in twins] == ["pair (BN)", "pair (no-BN)"]
    assert [t.comparison_id for t in twins] == [comparison_id] * 2


async def test_the_end_of_a_run_is_recorded_once_the_database_takes_it(make_service, monkeypatch):
    monkeypatch.setattr(runs, "RETRY_INTERVAL", 0.01)
    service, executor = await make_service(capacity=1)
    first, second = service.create_run(CONFIG).id, service.create_run(CONFIG).id
    write_status = service.store.set_status
    refusing = True

    def set_status(*args, **kwargs):
        if refusing:
            raise StoreError("database write failed: database is locked")
        write_status(*args, **kwargs)

    monkeypatch.setattr(service.store, "set_status", set_status)
    executor.complete(first)
    await executor.settled()
    await asyncio.sleep(0.05)  # several retries, all refused
    assert status(service, first) == "running" and executor.submitted == [first]

    refusing = False
    await eventually(lambda: status(service, first) == "completed")
    await eventually(lambda: executor.submitted == [first, second])
    assert status(service, second) == "running"


async def test_a_run_the_database_cannot_start_stays_first_in_line(make_service, monkeypatch):
    monkeypatch.setattr(runs, "RETRY_INTERVAL", 0.01)
    service, executor = await make_service(capacity=1)
    write_status = service.store.set_status
    refusing = True

    def set_status(*args, **kwargs):
        if refusing and args[1] == RunStatus.RUNNING:
            raise StoreError("database write failed: disk full")
        write_status(*args, **kwargs)

    monkeypatch.setattr(service.store, "set_status", set_status)
    a, b = service.create_run(CONFIG).id, service.create_run(CONFIG).id
    await asyncio.sleep(0.05)
    assert executor.submitted == [] and service.queue_length() == 2
    refusing = False
    await eventually(lambda: executor.submitted == [a])
    assert status(service, a) == "running" and status(service, b) == "queued"


async def test_a_run_whose_worker_cannot_start_fails_even_if_the_database_balks_once(
    make_service, monkeypatch
):
    monkeypatch.setattr(runs, "RETRY_INTERVAL", 0.01)
    service, executor = await make_service(capacity=1)
    submit, write_status = executor.submit, service.store.set_status
    refusals = {"failed": 1}

    def no_process(run_id, config, alone=False):
        raise OSError("fork: resource temporarily unavailable")

    def set_status(run_id, status, **kwargs):
        if status == RunStatus.FAILED and refusals["failed"]:
            refusals["failed"] -= 1
            raise StoreError("database write failed: database is locked")
        write_status(run_id, status, **kwargs)

    monkeypatch.setattr(executor, "submit", no_process)
    monkeypatch.setattr(service.store, "set_status", set_status)
    doomed = service.create_run(CONFIG).id
    monkeypatch.setattr(executor, "submit", submit)
    after = service.create_run(CONFIG).id

    # Not left "running" with no worker: it fails once the database takes the write,
    # and the run behind it starts.
    await eventually(lambda: status(service, doomed) == "failed")
    assert "could not start a worker: fork" in service.get(doomed).error
    await eventually(lambda: executor.submitted == [after])
    # The service still handles what workers report.
    executor.complete(after)
    await eventually(lambda: status(service, after) == "completed")


async def test_every_change_of_a_run_is_published_with_a_growing_sequence_number(
    make_service,
):
    service, executor = await make_service()
    run_id = service.create_run(CONFIG).id
    feed = service.hub.subscribe(run_topic(run_id))
    executor.report(run_id, StartEvent(total_steps=20, device="CPU:0", parameters=1))
    executor.report(run_id, evaluation(0))
    executor.complete(run_id)
    await executor.settled()
    messages = []
    while not feed.queue.empty():
        seq, text = await feed.next()
        messages.append((seq, json.loads(text)))
    assert [m["type"] for _, m in messages] == ["status", "eval", "test", "status"]
    seqs = [seq for seq, _ in messages]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert [m["seq"] for _, m in messages] == seqs
    assert messages[1][1]["point"]["step"] == 0
    assert messages[-1][1]["run"]["status"] == "completed"
    assert service.get(run_id).last_seq == seqs[-1]


async def test_runs_left_active_by_a_previous_server_are_interrupted_at_start(
    tmp_path, make_service
):
    store = Store(tmp_path / "bnlab.db")
    store.insert_run("left", "left running", CONFIG)
    store.set_status("left", RunStatus.RUNNING, last_seq=1)
    store.insert_run("waiting", "left queued", CONFIG)
    store.close()
    service, executor = await make_service(capacity=1)
    assert status(service, "left") == "interrupted"
    assert status(service, "waiting") == "interrupted"
    assert executor.submitted == []  # nothing restarts by itself


async def test_only_finished_runs_can_be_deleted(make_service):
    service, executor = await make_service()
    run_id = service.create_run(CONFIG).id
    with pytest.raises(Conflict, match="cancel it before deleting it"):
        service.delete(run_id)
    executor.end(run_id, Outcome.FAILED, "boom")
    await executor.settled()
    service.delete(run_id)
    assert service.store.get_run(run_id) is None
    assert run_id in executor.discarded


async def test_a_resumed_run_that_finds_no_checkpoint_starts_over_without_old_points(make_service):
    # A Ray node that cannot see the checkpoint directory trains the run again from 0.
    service, executor, run_id = await failed_after_two_evaluations(make_service, "node lost")
    service.resume(run_id)
    executor.report(run_id, StartEvent(total_steps=20, device="CPU:0", parameters=1, first_step=0))
    await executor.settled()
    assert [p["step"] for p in service.store.points(run_id)] == [0]
    assert service.get(run_id).step == 0
