"""A validation point as the server stores and exports it.

`EvalPoint` (bnlab.model.events) is the one definition of a point's fields;
`PointPublic` adds its sequence number. Here they are flattened into columns
and read back. A field added to `EvalPoint` reaches the insert, the public model
and the CSV by itself; the table gains it by a migration (bnlab.server.migrations),
which tests/server/test_store.py demands. Each field is stored by its type:

* a number or string: a column of its own;
* a model that is always there (the probe): a column per field of it, as in the
  `points` table of release 0.1.0;
* a model that may be absent (the diagnostics): one JSON column, NULL when absent.
  Its contents vary from run to run (one entry per layer, by name), so the CSV
  export (`PointCsv`) flattens them against the points it exports.
"""

from __future__ import annotations

import sqlite3
import types
import typing
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from pydantic import BaseModel

from bnlab.model.events import EvalPoint, finite_or_none
from bnlab.server.schemas import PointPublic


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


def _paths(model: type[BaseModel], names: dict[Path, list[str]], at: Path) -> Iterator[Path]:
    """The path to every single value of `model`, field by field. A list of models (the
    layers) goes by its items' `name`s, as found in the exported points (`names`); a
    list of numbers (bin edges, histogram counts, the landscape's values per step size)
    has no CSV column: it is in the JSON export."""
    for field_name, field in model.model_fields.items():
        path = (*at, field_name)
        if nested := _model(field.annotation) or _optional_model(field.annotation):
            yield from _paths(nested, names, path)
        elif item := _list_item_model(field.annotation):
            for name in names.get(path, []):
                yield from _paths(item, names, (*path, name))
        elif not _is_list(field.annotation):
            yield path


def _names(value: Any, at: Path, into: dict[Path, list[str]]) -> None:
    """Every list of named items in a dumped document (`into`: its path -> names, in the
    order they first appear)."""
    if isinstance(value, dict):
        for key, item in value.items():
            _names(item, (*at, key), into)
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        seen = into.setdefault(at, [])
        for item in value:
            if item.get("name") not in seen:
                seen.append(item["name"])
            _names(item, (*at, item["name"]), into)


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
            names: dict[Path, list[str]] = {}
            for dump in self._dumped:
                if dump.get(column) is not None:
                    _names(dump[column], (), names)
            self._paths += [(column, p) for p in _paths(_DOCUMENTS[column], names, ())]
        self.columns: list[str] = [".".join((column, *path)) for column, path in self._paths]

    @staticmethod
    def _dumps(point: EvalPoint) -> dict[str, Any]:
        return {
            name: None if (doc := getattr(point, name)) is None else doc.model_dump(mode="json")
            for name in _DOCUMENTS
        }

    def rows(self) -> Iterator[list[Any]]:
        """One row per point, in the order given, with `columns` values."""
        for point, dump in zip(self.points, self._dumped, strict=True):
            flat = flatten_point(point)
            yield [
                flat[column] if not path else _lookup(dump[column] or {}, path)
                for column, path in self._paths
            ]
