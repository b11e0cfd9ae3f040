"""Websocket routes: one run's live stream, and the all-runs table stream."""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import APIRouter, WebSocket

from ..experiments.service import ExperimentService, experiment_topic
from ..live.hub import END_SEQ, Subscriber
from ..live.messages import CloseCode, ExperimentSnapshotMessage, RunsMessage, SnapshotMessage
from ..runs.service import RUNS_TOPIC, NotFound, RunService, run_topic

router = APIRouter()
SEND_TIMEOUT = 10.0  # a client that takes longer to accept one message is dropped
RUNS_SNAPSHOT = 200


def _service(ws: WebSocket) -> RunService:
    return ws.app.state.service


async def _drain_client(ws: WebSocket) -> None:
    """Read and ignore what the client sends (the streams take no commands),
    text or binary, until it goes away."""
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return


async def _pump(ws: WebSocket, subscriber: Subscriber, after_seq: int) -> None:
    """Forward live messages newer than `after_seq` until the client leaves or lags."""
    while True:
        item = await subscriber.next()
        if item is None:
            await ws.close(CloseCode.TOO_SLOW, "client too slow; reconnect with after_seq")
            return
        seq, text = item
        if seq == END_SEQ:
            await asyncio.wait_for(ws.send_text(text), SEND_TIMEOUT)
            await ws.close(CloseCode.NOT_FOUND, "deleted")
            return
        if seq and seq <= after_seq:
            continue  # already in the snapshot
        await asyncio.wait_for(ws.send_text(text), SEND_TIMEOUT)


async def _serve(ws: WebSocket, subscriber: Subscriber, after_seq: int) -> None:
    service = _service(ws)
    reader = asyncio.create_task(_drain_client(ws))
    pump = asyncio.create_task(_pump(ws, subscriber, after_seq))
    try:
        await asyncio.wait({reader, pump}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        service.hub.unsubscribe(subscriber)
        for task in (reader, pump):
            task.cancel()
        for task in (reader, pump):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def _after_seq(ws: WebSocket) -> int | None:
    """The client's `after_seq`, or None once the socket is closed for a bad one."""
    raw_after = ws.query_params.get("after_seq")
    try:
        after_seq = int(raw_after) if raw_after is not None else 0
        if not 0 <= after_seq < 2**62:  # SQLite integers are 64-bit
            raise ValueError
    except ValueError:
        await ws.close(CloseCode.BAD_REQUEST, "after_seq must be a non-negative integer")
        return None
    return after_seq


@router.websocket("/ws/runs/{run_id}")
async def run_stream(ws: WebSocket, run_id: str) -> None:
    service = _service(ws)
    await ws.accept()
    after_seq = await _after_seq(ws)
    if after_seq is None:
        return
    # Subscribe before taking the snapshot: nothing can fall between the two,
    # and anything in both is filtered by its sequence number.
    subscriber = service.hub.subscribe(run_topic(run_id))
    try:
        run = service.get(run_id)
    except NotFound as exc:
        service.hub.unsubscribe(subscriber)
        await ws.close(CloseCode.NOT_FOUND, str(exc))
        return
    points = service.points(run_id, after_seq=after_seq)
    snapshot = SnapshotMessage(seq=run.last_seq, run=run, points=points)
    await ws.send_text(snapshot.text())
    await _serve(ws, subscriber, max(after_seq, run.last_seq))


@router.websocket("/ws/experiments/{experiment_id}")
async def experiment_stream(ws: WebSocket, experiment_id: str) -> None:
    """The experiment as it is now, then its updates. An update carries the whole
    state, so a client resuming with `after_seq` needs only the snapshot and what
    comes after it; nothing at or below `after_seq` is sent again."""
    experiments: ExperimentService = ws.app.state.experiments
    await ws.accept()
    after_seq = await _after_seq(ws)
    if after_seq is None:
        return
    # Subscribed before the snapshot, as for a run: see run_stream.
    subscriber = experiments.hub.subscribe(experiment_topic(experiment_id))
    try:
        experiment = experiments.get(experiment_id)
    except NotFound as exc:
        experiments.hub.unsubscribe(subscriber)
        await ws.close(CloseCode.NOT_FOUND, str(exc))
        return
    snapshot = ExperimentSnapshotMessage(seq=experiment.last_seq, experiment=experiment)
    await ws.send_text(snapshot.text())
    await _serve(ws, subscriber, max(after_seq, experiment.last_seq))


@router.websocket("/ws/runs")
async def runs_stream(ws: WebSocket) -> None:
    service = _service(ws)
    await ws.accept()
    subscriber = service.hub.subscribe(RUNS_TOPIC)
    runs = RunsMessage(runs=service.list_runs(limit=RUNS_SNAPSHOT)[0])
    await ws.send_text(runs.text())
    await _serve(ws, subscriber, 0)
