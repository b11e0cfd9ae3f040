"""A validation point as the server stores and exports it.

`EvalPoint` (bnlab.model.events) is the one definition of a point's fields;
`PointPublic` adds its sequence number. Here they are flattened into columns
(the probe's percentiles become columns of their own, as in the `points` table
and the CSV export) and read back. A field added to `EvalPoint` reaches the
insert, the public model and the CSV by itself; the table gains it by a
migration (bnlab.server.migrations), which tests/server/test_store.py demands.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from pydantic import BaseModel

from bnlab.model.events import EvalPoint, finite_or_none
from bnlab.server.schemas import PointPublic


def _nested(annotation: Any) -> type[BaseModel] | None:
    is_model = isinstance(annotation, type) and issubclass(annotation, BaseModel)
    return annotation if is_model else None


# Each field of a point, with the model its value is when it is nested (the probe).
_FIELDS: dict[str, type[BaseModel] | None] = {
    name: _nested(field.annotation) for name, field in EvalPoint.model_fields.items()
}
POINT_COLUMNS: tuple[str, ...] = tuple(
    column
    for name, nested in _FIELDS.items()
    for column in (nested.model_fields if nested else (name,))
)


def flatten_point(point: EvalPoint) -> dict[str, Any]:
    """The point's values by column, in `POINT_COLUMNS` order; non-finite numbers
    become None (NULL in SQLite, empty in the CSV)."""
    values: dict[str, Any] = {}
    for name, nested in _FIELDS.items():
        value = getattr(point, name)
        if nested:
            values.update({column: getattr(value, column) for column in nested.model_fields})
        else:
            values[name] = value
    return {k: finite_or_none(v) if isinstance(v, float) else v for k, v in values.items()}


def point_public(row: sqlite3.Row) -> PointPublic:
    """A stored row (`seq` and the `POINT_COLUMNS`) as the API shows it."""
    fields = {
        name: {column: row[column] for column in nested.model_fields} if nested else row[name]
        for name, nested in _FIELDS.items()
    }
    return PointPublic(seq=row["seq"], **fields)
