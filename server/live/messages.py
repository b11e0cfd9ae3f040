"""The live stream's contract: every message the websockets send, and the codes they
close with. The services write these, the websocket routes send them, and clients
(tests, bnlab.server.testing) read them back with `server_message`; the page mirrors
the close codes in frontend/js/closecodes.js. docs/api.md describes them.
"""

from __future__ import annotations

import json
from enum import IntEnum
from typing import Annotated, Literal

from pydantic import BaseModel, Field, TypeAdapter

from ..experiments.design import ExperimentStatus
from ..experiments.schemas import ExperimentProgress, ExperimentPublic
from ..runs.schemas import RunPublic
from ..storage.points import PointPublic


class CloseCode(IntEnum):
    """Why the server closed a websocket (4000-4999 are the application's own codes)."""

    TOO_SLOW = 4008  # the client fell behind its bounded queue; reconnect with after_seq
    BAD_REQUEST = 4400  # a malformed query parameter
    UNAUTHORIZED = 4401  # a token is set and the client did not send it
    FORBIDDEN = 4403  # a foreign Origin
    NOT_FOUND = 4404  # no such run or experiment, or it was deleted


class StreamMessage(BaseModel):
    def text(self) -> str:
        # json.dumps of the JSON-mode dump, not model_dump_json: the frames keep the
        # spacing and key order they have always had, byte for byte.
        return json.dumps(self.model_dump(mode="json"))


class SnapshotMessage(StreamMessage):
    """A run stream's first message: the run and every point after the client's after_seq."""

    type: Literal["snapshot"] = "snapshot"
    seq: int
    run: RunPublic
    points: list[PointPublic]


class EvalMessage(StreamMessage):
    """A new validation point."""

    type: Literal["eval"] = "eval"
    seq: int
    point: PointPublic
    sent_at: float | None = Field(description="Unix time the worker reported the point")


# What happened to a run: progress (about once a second), a status change, test metrics.
RunEventKind = Literal["progress", "status", "test"]


class RunEventMessage(StreamMessage):
    """The run's state after an event of one of the RunEventKind kinds."""

    type: RunEventKind
    seq: int
    run: RunPublic


class DeletedMessage(StreamMessage):
    """The run is gone; on a run stream, the last message before close code 4404."""

    type: Literal["deleted"] = "deleted"
    id: str


class RunsMessage(StreamMessage):
    """The runs stream's first message: the newest runs."""

    type: Literal["runs"] = "runs"
    runs: list[RunPublic]


class RunChangedMessage(StreamMessage):
    """On the runs stream: a run was created or its status or progress changed."""

    type: Literal["run"] = "run"
    run: RunPublic


class ExperimentSnapshotMessage(StreamMessage):
    """An experiment stream's first message: the experiment as it is now."""

    type: Literal["experiment_snapshot"] = "experiment_snapshot"
    seq: int
    experiment: ExperimentPublic


class ExperimentMessage(StreamMessage):
    """The whole experiment again, after one of its runs started, ended or was resumed."""

    type: Literal["experiment"] = "experiment"
    seq: int
    experiment: ExperimentPublic


class ExperimentProgressMessage(StreamMessage):
    """Progress of the experiment's runs, about once a second while they train."""

    type: Literal["experiment_progress"] = "experiment_progress"
    seq: int
    id: str
    status: ExperimentStatus
    progress: ExperimentProgress


ServerMessage = Annotated[
    SnapshotMessage
    | EvalMessage
    | RunEventMessage
    | DeletedMessage
    | RunsMessage
    | RunChangedMessage
    | ExperimentSnapshotMessage
    | ExperimentMessage
    | ExperimentProgressMessage,
    Field(discriminator="type"),
]


# Reads a frame back into its message (clients in Python, tests).
server_message = TypeAdapter(ServerMessage)
