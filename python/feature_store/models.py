"""What the server answers, as plain typed records. Each keeps the whole answer in `raw`, so a
field the server adds later is never lost to the client."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Union


def parse_time(text: Optional[str]) -> Optional[datetime]:
    """RFC 3339 as the server writes it (`2024-01-15T10:30:00.123456Z`), on Python 3.9+."""
    if text is None:
        return None
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def format_time(value: Any) -> str:
    """A datetime (naive means UTC, as the server reads it), a date or RFC 3339 text."""
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    if hasattr(value, "isoformat"):  # a date: its midnight, UTC
        return f"{value.isoformat()}T00:00:00Z"
    raise TypeError(f"expected a datetime, a date or RFC 3339 text, got {type(value).__name__}")


@dataclass(frozen=True)
class Aggregation:
    """One declared windowed aggregation: `function` of `column` over each of `windows`
    (`"1h"`, `"7d"`...); `q` for `percentile`. See docs/aggregations.md for the functions."""

    column: str
    function: str
    windows: List[str]
    q: Optional[float] = None

    def to_json(self) -> Dict[str, Any]:
        body: Dict[str, Any] = {
            "column": self.column,
            "function": self.function,
            "windows": list(self.windows),
        }
        if self.q is not None:
            body["q"] = self.q
        return body


@dataclass(frozen=True)
class Table:
    """A raw table."""

    id: int
    name: str
    schema: Optional[Dict[str, str]]
    event_time_column: Optional[str]
    row_count: int
    version: Optional[int]
    description: Optional[str]
    created_at: Optional[datetime]
    last_ingest_at: Optional[datetime]
    raw: Dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Dict[str, Any]) -> "Table":
        return cls(
            id=body["id"],
            name=body["name"],
            schema=body.get("schema_definition"),
            event_time_column=body.get("event_time_column"),
            row_count=body.get("row_count", 0),
            version=body.get("version"),
            description=body.get("description"),
            created_at=parse_time(body.get("created_at")),
            last_ingest_at=parse_time(body.get("last_ingest_at")),
            raw=body,
        )


@dataclass(frozen=True)
class Stream:
    """What a raw table follows (a Kafka topic or a NATS JetStream stream) and how following
    it goes: `status` is `starting`, `running`, `failing` (see `reason`) or `waiting`; each
    of `partitions` is `{"partition", "committed_offset", "lag"}` (one for NATS, one per Kafka
    partition). See docs/streams.md."""

    table_id: int
    type: str
    status: str
    reason: Optional[str]
    committer: Optional[str]
    partitions: List[Dict[str, Any]]
    events_committed: int
    rejected: int
    rejected_location: str
    last_commit_at: Optional[datetime]
    raw: Dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Dict[str, Any]) -> "Stream":
        return cls(
            table_id=body["raw_table_id"],
            type=body["type"],
            status=body["status"],
            reason=body.get("reason"),
            committer=body.get("committer"),
            partitions=list(body.get("partitions") or []),
            events_committed=body.get("events_committed", 0),
            rejected=body.get("rejected", 0),
            rejected_location=body.get("rejected_location", ""),
            last_commit_at=parse_time(body.get("last_commit_at")),
            raw=body,
        )


@dataclass(frozen=True)
class Feature:
    """A registered feature: SQL (`sql`) or declared aggregations."""

    id: int
    name: str
    table_id: int
    #: The key column, or the list of columns that name an entity together.
    entity_key: Union[str, List[str]]
    engine: str
    sql: Optional[str]
    aggregations: Optional[List[Aggregation]]
    filter: Optional[str]
    description: Optional[str]
    created_at: Optional[datetime]
    raw: Dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Dict[str, Any]) -> "Feature":
        aggregations = body.get("aggregations")
        return cls(
            id=body["id"],
            name=body["name"],
            table_id=body["raw_table_id"],
            entity_key=body["entity_key"],
            engine=body.get("engine", "polars"),
            sql=body.get("computation_logic") or None,
            aggregations=None
            if aggregations is None
            else [
                Aggregation(a["column"], a["function"], list(a["windows"]), a.get("q"))
                for a in aggregations
            ],
            filter=body.get("filter"),
            description=body.get("description"),
            created_at=parse_time(body.get("created_at")),
            raw=body,
        )


@dataclass(frozen=True)
class Version:
    """A feature version, with its freshness."""

    id: int
    feature_id: int
    version: str
    status: str
    computed_at: Optional[datetime]
    entity_count: Optional[int]
    output_schema: Optional[Dict[str, str]]
    data_as_of: Optional[datetime]
    stale: bool
    refresh_every_seconds: Optional[int]
    raw: Dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Dict[str, Any]) -> "Version":
        return cls(
            id=body["id"],
            feature_id=body["feature_id"],
            version=body["version"],
            status=body["status"],
            computed_at=parse_time(body.get("computed_at")),
            entity_count=body.get("entity_count"),
            output_schema=body.get("output_schema"),
            data_as_of=parse_time(body.get("data_as_of")),
            stale=bool(body.get("stale", False)),
            refresh_every_seconds=body.get("refresh_every_seconds"),
            raw=body,
        )


@dataclass(frozen=True)
class ComputeResult:
    """What a compute published: the version, how many vectors, and its snapshot."""

    version_id: int
    vectors_created: int
    entities_processed: int
    snapshot_id: int
    valid_from: Optional[datetime]
    raw: Dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Dict[str, Any]) -> "ComputeResult":
        return cls(
            version_id=body["feature_version_id"],
            vectors_created=body["vectors_created"],
            entities_processed=body["entities_processed"],
            snapshot_id=body["snapshot_id"],
            valid_from=parse_time(body.get("valid_from")),
            raw=body,
        )


@dataclass(frozen=True)
class Snapshot:
    """One published result of a version, in force from `valid_from`."""

    id: int
    valid_from: datetime
    computed_at: datetime
    entity_count: int
    kind: str
    raw: Dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Dict[str, Any]) -> "Snapshot":
        valid_from = parse_time(body["valid_from"])
        computed_at = parse_time(body["computed_at"])
        assert valid_from is not None and computed_at is not None
        return cls(
            id=body["id"],
            valid_from=valid_from,
            computed_at=computed_at,
            entity_count=body["entity_count"],
            kind=body["kind"],
            raw=body,
        )


@dataclass(frozen=True)
class TrainingDataset:
    """A training set written as Parquet files in the server's data location: where, how many
    rows, the label table's version read, and each feature's version (None: an aggregation
    feature by name)."""

    uri: str
    files: List[str]
    rows: int
    labels_version: int
    versions: Dict[str, Optional[int]]
    raw: Dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Dict[str, Any]) -> "TrainingDataset":
        return cls(
            uri=body["uri"],
            files=list(body["files"]),
            rows=body["rows"],
            labels_version=body["labels"]["version"],
            versions=dict(body["versions"]),
            raw=body,
        )


@dataclass(frozen=True)
class IngestResult:
    """Rows stored by one `ingest` call, and in how many requests (each one Delta commit)."""

    rows: int
    requests: int
    seconds: float
