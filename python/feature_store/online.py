"""The answer of `get_online_features`: rows in request order, as frames or dicts."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import pyarrow as pa

from . import frames


class OnlineFeatures:
    """One row per requested entity: `entity_id`, then `<reference>__<value>` for every value
    of every feature, null where the entity has none.

    `versions` maps each reference to the version id that answered it (None when it did not
    resolve), `unresolved` each unresolved reference to the reason, `freshness` each reference
    to its `data_as_of` / `stale` (and `evaluated_at` for aggregation features), and
    `missing` each entity id (a tuple of key values, for entities given as dicts of several
    key columns) to the references it had no values for.
    """

    def __init__(
        self,
        references: List[str],
        answers: List[Dict[str, Any]],
        schemas: Optional[Dict[str, Optional[Dict[str, str]]]] = None,
        key_order: Optional[List[str]] = None,
    ) -> None:
        self.references = references
        self._types: Dict[str, pa.DataType] = {}
        first = answers[0] if answers else {}
        self.versions: Dict[str, Optional[int]] = first.get("versions", {})
        self.unresolved: Dict[str, str] = first.get("unresolved", {})
        self.freshness: Dict[str, Any] = first.get("freshness", {})
        self._rows: List[Dict[str, Any]] = [row for a in answers for row in a.get("results", [])]
        # Entities sent as dicts of several key columns come back as such: a column each.
        self.key_columns: List[str] = []
        if any("entity_id" in row for row in self._rows) or not self._rows:
            self.key_columns.append("entity_id")
        for column in key_order or []:
            if any(column in (row.get("entity") or {}) for row in self._rows):
                self.key_columns.append(column)
        for row in self._rows:
            for column in row.get("entity") or {}:
                if column not in self.key_columns:
                    self.key_columns.append(column)
        self.missing: Dict[Any, List[str]] = {
            _label(row, self.key_columns): row["missing"] for row in self._rows if row.get("missing")
        }
        # Each reference's value names, in the order the server gave them, over every row (an
        # entity without values says nothing about them).
        self.columns: List[str] = []
        seen = set()
        for ref in references:
            # A computed version's output schema names every value column and its type, so
            # the frame has them whichever entities were asked (even none with values).
            for name, declared in ((schemas or {}).get(ref) or {}).items():
                column = f"{ref}__{name}"
                seen.add(column)
                self.columns.append(column)
                stored = frames.STORED.get(declared.strip().lower())
                if stored is not None:
                    self._types[column] = stored
            for row in self._rows:
                values = row["features"].get(ref)
                if values:
                    for name in values:
                        column = f"{ref}__{name}"
                        if column not in seen:
                            seen.add(column)
                            self.columns.append(column)

    def __len__(self) -> int:
        return len(self._rows)

    def __repr__(self) -> str:
        return f"OnlineFeatures({len(self._rows)} entities, columns={self.columns})"

    def to_dicts(self) -> List[Dict[str, Any]]:
        """One dict per entity: `entity_id` (or each key column of entities given as dicts of
        several) and every `<reference>__<value>`."""
        out = []
        for row in self._rows:
            flat: Dict[str, Any] = {column: None for column in self.key_columns}
            if "entity_id" in row:
                flat["entity_id"] = row["entity_id"]
            flat.update(row.get("entity") or {})
            flat.update((column, None) for column in self.columns)
            for ref in self.references:
                values = row["features"].get(ref) or {}
                for name, value in values.items():
                    flat[f"{ref}__{name}"] = value
            out.append(flat)
        return out

    def to_arrow(self) -> pa.Table:
        rows = self.to_dicts()
        return frames.rows_to_arrow(rows, self.key_columns + self.columns, self._types)

    def to_pandas(self) -> Any:
        return frames.from_arrow(self.to_arrow(), "pandas")

    to_df = to_pandas

    def to_polars(self) -> Any:
        return frames.from_arrow(self.to_arrow(), "polars")


def _label(row: Dict[str, Any], key_columns: List[str]) -> Any:
    """A row's entity as `missing` keys it: its id, or its key values as a tuple, in the
    order the request's dicts named the columns."""
    if "entity_id" in row:
        return row["entity_id"]
    entity = row.get("entity") or {}
    return tuple(entity[c] for c in key_columns if c in entity)
