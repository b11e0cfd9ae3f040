"""The websocket messages: every frame the run service publishes is a member of the
typed union in `server/schemas.py`, and the wire format is the one clients parse."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from bnlab.model import events
from bnlab.model.config import RunConfig
from bnlab.model.events import EvalEvent, ProbePercentiles, ProgressEvent, StartEvent
from bnlab.server.execution.executor import ExecutorMessage, RunEnded, TrainingEvent
from bnlab.server.live.hub import Hub
from bnlab.server.live.messages import DeletedMessage, EvalMessage, RunEventMessage, server_message
from bnlab.server.runs.service import RUNS_TOPIC, RunService, run_topic
from bnlab.server.status import Outcome, RunStatus
from bnlab.server.storage.points import PointPublic
from bnlab.server.storage.store import Store

PROBE = ProbePercentiles(p15=-2.1, p50=0.3, p85=2.2)


class ScriptedExecutor:
    """An in-process stand-in for the worker processes: a submitted run reports a
    start, two evaluations, progress, test metrics and its end, at once."""

    capacity = 1
    stacking = False  # every run reports as a run of its own

    def __init__(self) -> None:
        self.queue: asyncio.Queue[ExecutorMessage] = asyncio.Queue()
        self.running: set[str] = set()

    def submit(self, run_id: str, config: RunConfig, alone: bool = False) -> None:
        self.running.add(run_id)
        script = [
            StartEvent(total_steps=config.steps, device="CPU:0", parameters=10),
            EvalEvent(
                step=0,
                val_loss=2.3,
                val_acc=0.1,
                train_loss=None,
                examples_per_sec=None,
                elapsed=0.0,
                probe=PROBE,
            ),
            ProgressEvent(step=5, total_steps=config.steps, elapsed=1.0),
            EvalEvent(
                step=config.steps,
                val_loss=float("nan"),  # a diverging run: the point carries null
                val_acc=0.5,
                train_loss=1.0,
                examples_per_sec=320.0,
                elapsed=2.0,
                probe=PROBE,
            ),
            events.TestEvent(test_loss=0.5, test_accuracy=0.9, log_loss=0.5),
        ]
        for event in script:
            self.queue.put_nowait(TrainingEvent(run_id, event, sent_at=1_700_000_000.5))
        self.queue.put_nowait(RunEnded(run_id, Outcome.COMPLETED))

    def cancel(self, run_id: str) -> None:
        self.queue.put_nowait(RunEnded(run_id, Outcome.CANCELLED))

    def discard_checkpoint(self, run_id: str) -> None:
        pass

    def busy(self) -> int:
        return len(self.running)

    async def messages(self) -> AsyncIterator[ExecutorMessage]:
        while True:
            message = await self.queue.get()
            if isinstance(message, RunEnded):
                self.running.discard(message.run_id)
            yield message

    async def close(self) -> None:
        pass


def published_frames(db: Path) -> dict[str, list[str]]:
    """Every frame the service publishes on a run's topic and the runs topic while a
    comparison trains to the end and one of its runs is deleted."""

    async def scenario() -> dict[str, list[str]]:
        hub = Hub(queue_size=1000)
        service = RunService(Store(db), ScriptedExecutor(), hub, max_queued=10)
        runs_topic = hub.subscribe(RUNS_TOPIC)
        await service.start()
        _, runs = service.create_comparison(RunConfig(steps=10, eval_every=5), "pair")
        first = hub.subscribe(run_topic(runs[0].id))
        deadline = time.monotonic() + 30  # the script takes milliseconds
        while service.get(runs[1].id).status != RunStatus.COMPLETED:
            assert time.monotonic() < deadline, service.get(runs[1].id)
            await asyncio.sleep(0.01)
        service.delete(runs[0].id)
        await service.stop()
        frames: dict[str, list[str]] = {"run": [], "runs": []}
        for name, subscriber in (("run", first), ("runs", runs_topic)):
            while not subscriber.queue.empty():
                frames[name].append(subscriber.queue.get_nowait()[1])
        return frames

    return asyncio.run(scenario())


def test_every_published_frame_is_a_message_of_the_union(tmp_path):
    frames = published_frames(tmp_path / "bnlab.db")
    kinds = {name: [json.loads(f)["type"] for f in texts] for name, texts in frames.items()}
    # The subscriber joined before the first run started: it saw its whole life.
    assert {"status", "eval", "progress", "test", "deleted"} <= set(kinds["run"])
    assert kinds["runs"].count("run") >= 6 and kinds["runs"][-1] == "deleted"
    for text in frames["run"] + frames["runs"]:
        message = server_message.validate_json(text)
        assert message.text() == text  # nothing is lost or reshaped on the way back
    # strict JSON: a browser's JSON.parse rejects NaN
    for text in frames["run"]:
        json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))


def test_the_wire_format_is_the_one_clients_parse():
    point = PointPublic(
        seq=12,
        step=200,
        val_loss=0.1514,
        val_acc=0.9562,
        train_loss=0.31,
        examples_per_sec=1350.2,
        elapsed=12.4,
        probe=PROBE,
    )
    assert DeletedMessage(id="3f9c").text() == '{"type": "deleted", "id": "3f9c"}'
    assert EvalMessage(seq=12, point=point, sent_at=None).text() == (
        '{"type": "eval", "seq": 12, "point": {"seq": 12, "step": 200, "val_loss": 0.1514, '
        '"val_acc": 0.9562, "train_loss": 0.31, "examples_per_sec": 1350.2, "elapsed": 12.4, '
        '"probe": {"p15": -2.1, "p50": 0.3, "p85": 2.2}, "diagnostics": null}, "sent_at": null}'
    )


def test_a_frame_of_unknown_type_is_not_a_message():
    with pytest.raises(ValidationError):
        server_message.validate_json('{"type": "gossip", "id": "x"}')
    with pytest.raises(ValidationError):  # a run event needs its run
        RunEventMessage.model_validate_json('{"type": "status", "seq": 1}')
