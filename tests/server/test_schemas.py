import json
import math

from bnlab.model.events import EvalEvent, ProbePercentiles
from bnlab.server.storage.points import PointPublic


def test_a_diverged_evaluation_becomes_strict_json_with_nulls():
    nan, inf = math.nan, math.inf
    event = EvalEvent(
        step=3,
        val_loss=nan,
        val_acc=0.1,
        train_loss=inf,
        examples_per_sec=1.0,
        elapsed=1.0,
        probe=ProbePercentiles(p15=nan, p50=1.0, p85=-inf),
    )
    point = PointPublic(seq=1, **event.model_dump(exclude={"type"}))
    text = json.dumps(point.model_dump(mode="json"), allow_nan=False)  # browsers reject NaN
    data = json.loads(text)
    assert data["val_loss"] is None and data["train_loss"] is None
    assert data["probe"] == {"p15": None, "p50": 1.0, "p85": None}
    assert data["val_acc"] == 0.1
