"""A validation point as the server stores and exports it.

`EvalPoint` (bnlab.model.events) is the one definition of a point's fields;
`PointPublic` adds its sequence number. Here they are flattened into columns
and read back. A field added to `EvalPoint` reaches the insert, the public model
and the CSV by itself; the table gains it by a migration (bnlab.server.storage.migrations),
which tests/server/test_store.py demands. Each field is stored by its type:

* a number or string: a column of its own;
* a model that is always there (the probe): a column per field of it, as in the
  `points` table of release 0.1.0;
* a model that may be absent (the diagnostics): one JSON column, NULL when absent.
  Its contents vary from run to run (one entry per layer, by name), so the CSV
  export (`PointCsv`) flattens them against the points it exports.
"""

from __future__ import annotations

import csv
import io
import sqlite3
import types
import typing
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field, field_validator

from ...model.events import EvalPoint, finite_or_none


class _Sequenced(BaseModel):
    seq: int = Field(description="The run's event sequence number that carried this point")


class PointPublic(EvalPoint, _Sequenced):
    """One validation evaluation (the fields of `EvalPoint`) with its sequence number,
    which comes first in the JSON: fields of the last base come first. Non-finite
    numbers are null."""

    @field_validator("*", mode="before")
    @classmethod
    def _finite_or_null(cls, value: object) -> object:
        return finite_or_none(value) if isinstance(value, float) else value


def _model(annotation: Any) -> type[BaseModel] | None:
    is_model = isinstance(annotation, type) and issubclass(annotation, BaseModel)
    return annotation if is_model else None


def _optional_model(annotation: Any) -> type[BaseModel] | None:
    """The model of an `X | None` annotation whose X is a model."""
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return None
    members = [a for a in typing.get_args(annotation) if a is not type(None)]
    return _model(members[0]) if len(members) == 1 else None


# Each field of a point, with the model its value is when it is flattened into columns.
_FIELDS: dict[str, type[BaseModel] | None] = {
    name: _model(field.annotation) for name, field in EvalPoint.model_fields.items()
}
# The fields stored as one JSON document each, with their model.
_DOCUMENTS: dict[str, type[BaseModel]] = {
    name: model
    for name, field in EvalPoint.model_fields.items()
    if (model := _optional_model(field.annotation))
}
POINT_COLUMNS: tuple[str, ...] = tuple(
    column
    for name, nested in _FIELDS.items()
    for column in (nested.model_fields if nested else (name,))
)


def flatten_point(point: EvalPoint) -> dict[str, Any]:
    """The point's values by column, in `POINT_COLUMNS` order; non-finite numbers
    become None (NULL in SQLite), a document its JSON text."""
    values: dict[str, Any] = {}
    for name, nested in _FIELDS.items():
        value = getattr(point, name)
        if nested:
            values.update({column: getattr(value, column) for column in nested.model_fields})
        elif name in _DOCUMENTS:
            # The models serialise non-finite floats as null (their ser_json_inf_nan).
            values[name] = None if value is None else value.model_dump_json()
        else:
            values[name] = value
    return {k: finite_or_none(v) if isinstance(v, float) else v for k, v in values.items()}


def point_public(row: sqlite3.Row) -> PointPublic:
    """A stored row (`seq` and the `POINT_COLUMNS`) as the API shows it."""
    fields: dict[str, Any] = {}
    for name, nested in _FIELDS.items():
        if nested:
            fields[name] = {column: row[column] for column in nested.model_fields}
        elif name in _DOCUMENTS and row[name] is not None:
            fields[name] = _DOCUMENTS[name].model_validate_json(row[name])
        else:
            fields[name] = row[name]
    return PointPublic(seq=row["seq"], **fields)


# -- the CSV export ----------------------------------------------------------------

Path = tuple[str, ...]


def _list_item_model(annotation: Any) -> type[BaseModel] | None:
    if typing.get_origin(annotation) is not list:
        return None
    [item] = typing.get_args(annotation)
    return _model(item)


def _is_list(annotation: Any) -> bool:
    return typing.get_origin(annotation) is list


def _paths(model: type[BaseModel], seen: _Seen, at: Path, named: bool = False) -> Iterator[Path]:
    """The path to every single value of `model`, field by field. A list of models (the
    layers) goes by its items' `name`s, as found in the exported points, which are then
    in the path and not columns of their own; a part that may be absent has columns only
    when an exported point has it (no `pre_bn` columns for runs without BN); a list of
    numbers (bin edges, histogram counts, the landscape's values per step size) has no
    CSV column: it is in the JSON export."""
    for field_name, info in model.model_fields.items():
        if named and field_name == "name":
            continue
        path = (*at, field_name)
        if nested := _model(info.annotation):
            yield from _paths(nested, seen, path)
        elif nested := _optional_model(info.annotation):
            if path in seen.parts:
                yield from _paths(nested, seen, path)
        elif item := _list_item_model(info.annotation):
            for name in seen.names.get(path, []):
                yield from _paths(item, seen, (*path, name), named=True)
        elif not _is_list(info.annotation):
            yield path


@dataclass
class _Seen:
    """What the exported points have of a document: the paths of its parts that are
    there in at least one, and the names of the items of each list of named items (in
    the order they first appear)."""

    parts: set[Path] = field(default_factory=set)
    names: dict[Path, list[str]] = field(default_factory=dict)

    def add(self, value: Any, at: Path = ()) -> None:
        if isinstance(value, dict):
            self.parts.add(at)
            for key, item in value.items():
                self.add(item, (*at, key))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            names = self.names.setdefault(at, [])
            for item in value:
                if item["name"] not in names:
                    names.append(item["name"])
                self.add(item, (*at, item["name"]))


def _lookup(document: dict[str, Any], path: Path) -> Any:
    value: Any = document
    for step in path:
        if isinstance(value, list):
            value = next((item for item in value if item.get("name") == step), None)
        elif isinstance(value, dict):
            value = value.get(step)
        if value is None:
            return None
    return value


class PointCsv:
    """The CSV table of some points: their columns (`POINT_COLUMNS`, with each document
    flattened in place into one column per single value, named by its path, e.g.
    `diagnostics.layers.conv1.pre_bn.p15`) and a row per point. The columns of a
    document's named items (the layers) are those of the exported points; a point
    without the document, or without that item, has empty cells there."""

    def __init__(self, points: Iterable[EvalPoint]) -> None:
        self.points: Sequence[EvalPoint] = list(points)
        self._dumped = [self._dumps(point) for point in self.points]
        self._paths: list[tuple[str, Path]] = []  # (document or scalar column, path)
        for column in POINT_COLUMNS:
            if column not in _DOCUMENTS:
                self._paths.append((column, ()))
                continue
            seen = _Seen()
            for dump in self._dumped:
                if dump[column] is not None:
                    seen.add(dump[column])
            if () in seen.parts:  # no columns for a document none of the points has
                self._paths += [(column, p) for p in _paths(_DOCUMENTS[column], seen, ())]
        self.columns: list[str] = [".".join((column, *path)) for column, path in self._paths]

    @staticmethod
    def _dumps(point: EvalPoint) -> dict[str, Any]:
        return {
            name: None if (doc := getattr(point, name)) is None else doc.model_dump(mode="json")
            for name in _DOCUMENTS
        }

    def text(self, before: Sequence[str] = (), places: Iterable[Sequence[Any]] = ()) -> str:
        """The table as CSV text; `before` names columns put in front of the point's,
        `places` gives their values, one sequence per point (e.g. the run it belongs to)."""
        places = iter(places) if before else None
        rows = ([*next(places), *row] if places else row for row in self.rows())
        return csv_text([*before, *self.columns], rows)

    def rows(self) -> Iterator[list[Any]]:
        """One row per point, in the order given, with `columns` values."""
        for point, dump in zip(self.points, self._dumped, strict=True):
            flat = flatten_point(point)
            yield [
                flat[column] if not path else _lookup(dump[column] or {}, path)
                for column, path in self._paths
            ]


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Every CSV the server serves, written one way (Python's csv dialect `excel`)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()
