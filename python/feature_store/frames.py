"""DataFrames in and out: pandas, polars and pyarrow tables, through Arrow.

Nothing here imports pandas or polars unless it was given one of their frames, so the package
works with pyarrow alone.
"""

from __future__ import annotations

import io
from typing import Any, Callable, Dict, List, Optional, Tuple

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import Invalid

PARQUET = "application/vnd.apache.parquet"
ARROW = "application/vnd.apache.arrow.file"

# What a raw table stores each declared type as, under every spelling the server accepts (the
# server keeps a Parquet body of exactly these types as it came, without decoding it).
_STRING, _INTEGER, _FLOAT = pa.string(), pa.int64(), pa.float64()
_BOOLEAN, _DATE, _DATETIME = pa.bool_(), pa.date32(), pa.timestamp("us", tz="UTC")
STORED: Dict[str, pa.DataType] = {
    **dict.fromkeys(["string", "str", "text", "varchar"], _STRING),
    **dict.fromkeys(["integer", "int", "int64", "bigint", "long"], _INTEGER),
    **dict.fromkeys(["float", "double", "float64", "number", "real"], _FLOAT),
    **dict.fromkeys(["boolean", "bool"], _BOOLEAN),
    "date": _DATE,
    **dict.fromkeys(["datetime", "timestamp"], _DATETIME),
}


def kind_of(frame: Any) -> str:
    """`pandas`, `polars` or `arrow`, without importing the libraries that were not used."""
    if isinstance(frame, pa.Table):
        return "arrow"
    if isinstance(frame, pa.RecordBatch):
        return "arrow"
    module = type(frame).__module__.split(".")[0]
    if module == "pandas" and type(frame).__name__ == "DataFrame":
        return "pandas"
    if module == "polars" and type(frame).__name__ == "DataFrame":
        return "polars"
    raise TypeError(
        f"expected a pandas or polars DataFrame or a pyarrow Table, got {type(frame).__name__}"
    )


def is_frame(value: Any) -> bool:
    try:
        kind_of(value)
        return True
    except TypeError:
        return False


def to_arrow(frame: Any) -> pa.Table:
    kind = kind_of(frame)
    if kind == "arrow":
        return frame if isinstance(frame, pa.Table) else pa.Table.from_batches([frame])
    if kind == "pandas":
        return pa.Table.from_pandas(frame, preserve_index=False)
    return frame.to_arrow()


def from_arrow(table: pa.Table, kind: str, index: Any = None) -> Any:
    """`table` as the kind of frame the caller gave (pandas keeps integers and booleans with
    nulls as nullable `Int64` / `boolean`, not floats or objects)."""
    if kind == "arrow":
        return table
    if kind == "polars":
        import polars as pl

        return pl.from_arrow(table)
    import pandas as pd

    def nullable(t: pa.DataType) -> Any:
        if pa.types.is_integer(t):
            return pd.UInt64Dtype() if t == pa.uint64() else pd.Int64Dtype()
        if pa.types.is_boolean(t):
            return pd.BooleanDtype()
        return None

    frame = table.to_pandas(types_mapper=nullable)
    if index is not None:
        frame.index = index
    return frame


def api_type(field: pa.Field) -> str:
    """The raw-table column type a field is registered as."""
    t = field.type
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_string(t) or pa.types.is_large_string(t) or _is_string_view(t):
        return "string"
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "float"
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_timestamp(t):
        return "datetime"
    if pa.types.is_null(t):
        raise Invalid(
            400,
            f"Column {field.name} has only nulls, so its type is unknown: pass schema=",
        )
    raise Invalid(
        400,
        f"Column {field.name} is {t}: a raw table holds string, integer, float, boolean, "
        "date and datetime columns",
    )


def _is_string_view(t: pa.DataType) -> bool:
    check = getattr(pa.types, "is_string_view", None)
    return bool(check and check(t))


def schema_of(frame: Any) -> Dict[str, str]:
    """A raw table's `schema_definition` from a frame's columns (a pandas object column's
    type is inferred from its values)."""
    kind = kind_of(frame)
    if kind == "arrow":
        schema = frame.schema
    elif kind == "pandas":
        schema = pa.Schema.from_pandas(frame, preserve_index=False)
    else:
        schema = frame.head(0).to_arrow().schema
    return {field.name: api_type(field) for field in schema}


def as_stored(table: pa.Table, schema: Dict[str, str]) -> pa.Table:
    """The table's declared columns, each brought to the type the server stores where the
    server itself would convert it without a question (any integer to an integer column, any
    number to a float column, text of any layout to a string column, any datetime or a date to
    a datetime column), so that the server can keep the Parquet file as it came. Anything else
    (a number for a datetime, text for a number) is sent as it is: the server converts it or
    refuses it with its own message, and a missing column is the server's to name."""
    if not all(name in table.column_names for name in schema):
        return table
    columns = []
    for name, declared in schema.items():
        column = table.column(name)
        target = STORED.get(declared.strip().lower())
        if target is not None and column.type != target and _lossless(column.type, target):
            try:
                # Datetimes: sub-microsecond digits are dropped, as the server drops them.
                column = column.cast(target, safe=not pa.types.is_timestamp(target))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                column = table.column(name)
        columns.append(column)
    return pa.table(columns, names=list(schema))


def _lossless(given: pa.DataType, target: pa.DataType) -> bool:
    """Whether the server's own conversion (`conform_column`) takes `given` for `target`."""
    if pa.types.is_dictionary(given):
        given = given.value_type
    if pa.types.is_null(given):
        return True
    if target == _STRING:
        return (
            pa.types.is_string(given) or pa.types.is_large_string(given) or _is_string_view(given)
        )
    if target == _INTEGER:
        return pa.types.is_integer(given)
    if target == _FLOAT:
        return pa.types.is_integer(given) or pa.types.is_floating(given)
    if target == _DATE:
        return pa.types.is_date(given)
    if target == _DATETIME:
        return pa.types.is_timestamp(given) or pa.types.is_date(given)
    return False


def parquet_bytes(table: pa.Table, compression: str = "zstd", dictionary: bool = True) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression=compression, use_dictionary=dictionary)
    return sink.getvalue()


def slicer(
    frame: Any, schema: Optional[Dict[str, str]]
) -> Tuple[int, Callable[[int, int], pa.Table]]:
    """The row count of a frame, and a function giving rows [start, start + count) as Arrow in
    the types the table stores. Slices are converted when asked for: a pandas frame's text
    columns cost most to convert, and the client converts one slice while it sends another."""
    kind = kind_of(frame)

    def stored(table: pa.Table) -> pa.Table:
        return as_stored(table, schema) if schema else table

    if kind == "pandas":

        def pandas_rows(start: int, count: int) -> pa.Table:
            piece = frame.iloc[start : start + count]
            try:
                return stored(pa.Table.from_pandas(piece, preserve_index=False))
            except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
                raise Invalid(400, f"Invalid data: {error}") from None

        return len(frame), pandas_rows
    if kind == "polars":
        return frame.height, lambda start, count: stored(frame.slice(start, count).to_arrow())
    table = to_arrow(frame)
    return table.num_rows, lambda start, count: stored(table.slice(start, count))


def arrow_bytes(table: pa.Table) -> memoryview:
    """An Arrow IPC file: no encoding, and the server reads it as it is. Written twice, first
    to a stream that only counts, so the real one goes into a buffer of the right size at once
    (a growing buffer copied 20 MB of labels several times: 16 ms against 2). A view of that
    buffer, which the HTTP client sends as it is (`to_pybytes` would copy it once more)."""
    counted = pa.MockOutputStream()
    with pa.ipc.new_file(counted, table.schema) as writer:
        writer.write_table(table)
    buffer = pa.allocate_buffer(counted.size())
    with pa.ipc.new_file(pa.FixedSizeBufferWriter(buffer), table.schema) as writer:
        writer.write_table(table)
    return memoryview(buffer)


def read_arrow(body: bytes, leave_out: Tuple[str, ...] = ()) -> pa.Table:
    """An Arrow IPC file's columns but `leave_out`; the columns are views of `body`."""
    table = pa.ipc.open_file(pa.py_buffer(body)).read_all()
    return table.drop_columns([c for c in leave_out if c in table.column_names])


def rows_to_arrow(
    rows: List[Dict[str, Any]], columns: List[str], types: Optional[Dict[str, pa.DataType]] = None
) -> pa.Table:
    """Per-row dicts as columns, of the given types where known (JSON text for dates and
    datetimes parsed), else as pyarrow infers them; None is null."""
    arrays = []
    for column in columns:
        values = [row.get(column) for row in rows]
        target = (types or {}).get(column)
        try:
            if target is None:
                array = pa.array(values)
            elif pa.types.is_timestamp(target) or pa.types.is_date(target):
                array = pa.array(values, type=pa.string()).cast(target)
            else:
                array = pa.array(values, type=target)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            array = pa.array(values)  # the values are not what the schema said: as they are
        arrays.append(array)
    return pa.table(arrays, names=columns)
