"""Read a raw table (a Delta table) and a snapshot (a Parquet file) the service wrote, with the
`deltalake` and `polars` packages from PyPI, and print what they hold as JSON:
{"version": N, "files": F, "table": [rows], "snapshot": [rows]}. Dates and datetimes print as
ISO 8601 text. tests/api/interop.rs compares it with what the API serves."""

import json
import sys

import polars as pl
from deltalake import DeltaTable


def plain(frame: pl.DataFrame) -> list:
    frame = frame.with_columns(
        [pl.col(c).dt.strftime("%Y-%m-%dT%H:%M:%S%.6f") for c, t in frame.schema.items() if t == pl.Datetime or isinstance(t, pl.Datetime)]
        + [pl.col(c).cast(pl.String) for c, t in frame.schema.items() if t == pl.Date]
    )
    return frame.to_dicts()


def main() -> None:
    table_uri, snapshot = sys.argv[1], sys.argv[2]
    delta = DeltaTable(table_uri)
    table = pl.read_delta(table_uri)
    print(
        json.dumps(
            {
                "version": delta.version(),
                "files": len(delta.file_uris()),
                "table": plain(table),
                "snapshot": plain(pl.read_parquet(snapshot)),
            }
        )
    )


if __name__ == "__main__":
    main()
