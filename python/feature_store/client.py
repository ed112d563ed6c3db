"""The client: the work a data scientist does with a feature store, one call each."""

from __future__ import annotations

import os
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import pyarrow as pa
import requests

from . import frames
from .errors import FeatureStoreError, Invalid, NotFound, Overloaded, error_for
from .models import (
    Aggregation,
    ComputeResult,
    Feature,
    IngestResult,
    Snapshot,
    Stream,
    Table,
    TrainingDataset,
    Version,
    format_time,
)
from .online import OnlineFeatures

TableRef = Union[str, int, Table]
FeatureRef = Union[str, int, Feature]
Seconds = Union[int, float, timedelta]

DEFAULT_URL = "http://127.0.0.1:8000"
# The server's default MAX_BODY_BYTES; a server with a smaller one answers 413, and the client
# then sends smaller requests.
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
# Batch serving takes at most this many entities a request.
BATCH_ENTITIES = 10_000


class Client:
    """A feature store at `url` (default: `$FEATURE_STORE_URL`, else http://127.0.0.1:8000),
    with `api_key` (default: `$FEATURE_STORE_API_KEY`, else none).

    A 503 (the server is busy) is retried up to `retries` times, waiting what its
    `Retry-After` says (at most `max_retry_wait` seconds); then `Overloaded` is raised. Ingest
    is the exception: its 503 is raised at once (see `ingest`).
    Every other refusal raises at once: `Invalid` (400, 409, 413, 415, 422), `NotFound` (404),
    `AccessDenied` (401, 403), `ServerError` (5xx), each with the server's `status` and
    `detail`.
    """

    def __init__(
        self,
        url: Optional[str] = None,
        api_key: Optional[str] = None,
        *,
        timeout: float = 600.0,
        retries: int = 5,
        max_retry_wait: float = 30.0,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        base = (url or os.environ.get("FEATURE_STORE_URL") or DEFAULT_URL).rstrip("/")
        if base.endswith("/api/v1"):
            base = base[: -len("/api/v1")]
        self.url = base
        self.timeout = timeout
        self.retries = retries
        self.max_retry_wait = max_retry_wait
        self.max_body_bytes = max_body_bytes
        self._session = requests.Session()
        self._schemas: Dict[int, Optional[Dict[str, str]]] = {}
        key = api_key if api_key is not None else os.environ.get("FEATURE_STORE_API_KEY")
        if key:
            self._session.headers["Authorization"] = f"Bearer {key}"

    def __repr__(self) -> str:
        return f"Client(url={self.url!r})"

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    # ---- HTTP ----

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: Optional[Union[bytes, memoryview]] = None,
        params: Any = None,
        headers: Optional[Dict[str, str]] = None,
        retry: bool = True,
    ) -> requests.Response:
        url = f"{self.url}/api/v1{path}"
        attempt = 0
        while True:
            response = self._session.request(
                method,
                url,
                json=json,
                data=data,
                params=params,
                headers=headers,
                timeout=self.timeout,
            )
            if response.status_code < 400:
                return response
            error = self._error(response, method, path)
            if retry and isinstance(error, Overloaded) and attempt < self.retries:
                wait = error.retry_after if error.retry_after is not None else 0.5 * 2**attempt
                time.sleep(min(max(wait, 0.0), self.max_retry_wait))
                attempt += 1
                continue
            raise error

    @staticmethod
    def _error(response: requests.Response, method: str, path: str) -> FeatureStoreError:
        try:
            body = response.json()
            detail = body.get("detail", response.text) if isinstance(body, dict) else body
        except ValueError:
            detail = response.text or response.reason
        retry_after: Optional[float] = None
        header = response.headers.get("Retry-After")
        if header is not None:
            try:
                retry_after = float(header)
            except ValueError:
                retry_after = None
        return error_for(response.status_code, detail, method, path, retry_after)

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        return response.json() if response.content else None

    # ---- raw tables ----

    def tables(self) -> List[Table]:
        """Every raw table, oldest first."""
        return [Table.from_json(t) for t in self._json("GET", "/raw-tables")]

    def table(self, table: TableRef) -> Table:
        """One raw table, by name, id or a `Table` (fetched again: its row count moves)."""
        if isinstance(table, Table):
            table = table.id
        if isinstance(table, int):
            return Table.from_json(self._json("GET", f"/raw-tables/{table}"))
        for found in self.tables():
            if found.name == table:
                return found
        raise NotFound(404, f"Raw table '{table}' not found", "GET", "/raw-tables")

    def create_table(
        self,
        name: str,
        df: Any = None,
        *,
        schema: Optional[Dict[str, str]] = None,
        event_time_column: Optional[str] = None,
        description: Optional[str] = None,
    ) -> Table:
        """Register a raw table. Its columns come from `schema` (the API's `schema_definition`:
        column -> `string`, `integer`, `float`, `boolean`, `date` or `datetime`) or from the
        columns of `df` (a pandas or polars DataFrame or a pyarrow Table; only its schema is
        read: `ingest` stores rows). `event_time_column` names the date or datetime column
        that history, training sets and aggregation features use as each row's time."""
        if schema is None and df is not None:
            schema = frames.schema_of(df)
        body: Dict[str, Any] = {"name": name}
        if schema is not None:
            body["schema_definition"] = dict(schema)
        if event_time_column is not None:
            body["event_time_column"] = event_time_column
        if description is not None:
            body["description"] = description
        return Table.from_json(self._json("POST", "/raw-tables", json=body))

    def delete_table(self, table: TableRef) -> None:
        """Delete a raw table and its stored rows (refused while a feature reads it)."""
        self._request("DELETE", f"/raw-tables/{self._table_id(table)}")

    def _table_id(self, table: TableRef) -> int:
        if isinstance(table, Table):
            return table.id
        if isinstance(table, int):
            return table
        return self.table(table).id

    # ---- streams ----

    def follow_kafka(
        self,
        table: TableRef,
        brokers: str,
        topic: str,
        *,
        max_batch_events: Optional[int] = None,
        max_batch_interval_ms: Optional[int] = None,
    ) -> Stream:
        """Make `table` follow every partition of the Kafka `topic` on `brokers`
        (`"host:port,host:port"`): each message, one JSON object, is checked as an ingested row
        and committed exactly once in micro-batches (at most every `max_batch_interval_ms`,
        default 1000, or `max_batch_events`, default 10000). Following the same topic again
        resumes after the last message committed."""
        source = {"type": "kafka", "brokers": brokers, "topic": topic}
        return self._follow(table, source, max_batch_events, max_batch_interval_ms)

    def follow_nats(
        self,
        table: TableRef,
        url: str,
        stream: str,
        *,
        subject: Optional[str] = None,
        max_batch_events: Optional[int] = None,
        max_batch_interval_ms: Optional[int] = None,
    ) -> Stream:
        """Make `table` follow the NATS JetStream `stream` at `url` (`nats://host:port`, or
        `tls://host:port` to insist on TLS), optionally only the messages on `subject`
        (`"tx.>"`); otherwise as `follow_kafka`.
        The server's own NATS credentials are used, never ones in a request."""
        source: Dict[str, Any] = {"type": "nats", "url": url, "stream": stream}
        if subject is not None:
            source["subject"] = subject
        return self._follow(table, source, max_batch_events, max_batch_interval_ms)

    def _follow(
        self,
        table: TableRef,
        source: Dict[str, Any],
        max_batch_events: Optional[int],
        max_batch_interval_ms: Optional[int],
    ) -> Stream:
        if max_batch_events is not None:
            source["max_batch_events"] = max_batch_events
        if max_batch_interval_ms is not None:
            source["max_batch_interval_ms"] = max_batch_interval_ms
        path = f"/raw-tables/{self._table_id(table)}/stream"
        return Stream.from_json(self._json("PUT", path, json=source))

    def stream(self, table: TableRef) -> Stream:
        """The stream `table` follows and how it goes (`NotFound` when it follows none)."""
        return Stream.from_json(self._json("GET", f"/raw-tables/{self._table_id(table)}/stream"))

    def stop_following(self, table: TableRef) -> None:
        """Stop following the table's stream; what was committed stays in the table."""
        self._request("DELETE", f"/raw-tables/{self._table_id(table)}/stream")

    # ---- ingest ----

    def ingest(
        self,
        table: TableRef,
        df: Any,
        *,
        progress: Optional[bool] = None,
        compression: str = "zstd",
    ) -> IngestResult:
        """Store the rows of `df` (pandas, polars or a pyarrow Table) in a raw table.

        The rows go as Parquet in requests under the server's body limit, each slice converted
        when its turn comes (the next is converted while the last is sent), with columns
        brought to the types the table stores where the server would convert them anyway (so
        it keeps each file as it came). Each request is one atomic Delta commit: a refused
        request stores nothing of itself, but the requests before it stay stored, so any
        exception raised here carries `rows_ingested`, the rows stored before it. A 503 is not
        retried here (an object store that took a commit and lost its answer looks the same,
        and a retry would store the rows twice): it is raised as `Overloaded`. `progress`
        shows a bar (tqdm's when installed) on stderr; by default in a notebook or on a
        terminal, when there is more than one request.
        """
        counter = _Stored()
        started = time.perf_counter()
        pending: Optional[Future[None]] = None
        try:
            found = self.table(table)
            total, rows_of = frames.slicer(df, found.schema)
            if total == 0:
                raise Invalid(400, "Invalid data: No data provided", "POST", "ingest")
            path = f"/raw-tables/{found.id}/data"
            chunks = _Chunker(total, rows_of, self.max_body_bytes, compression)
            bar = _progress(total, progress, chunks.expected_requests())
            try:
                with ThreadPoolExecutor(max_workers=1) as pool:
                    for rows, body in chunks:
                        if pending is not None:
                            pending.result()
                            bar(counter.rows)
                        pending = pool.submit(self._send_rows, path, rows, body, chunks, counter)
                    if pending is not None:
                        pending.result()
                        bar(counter.rows)
            finally:
                bar(None)
        except BaseException as error:
            # A request still in flight has finished by now (the pool waits for it), stored or
            # not: the count includes it if it was stored.
            try:
                error.rows_ingested = counter.rows  # type: ignore[attr-defined]
            except AttributeError:
                pass
            raise
        return IngestResult(counter.rows, counter.requests, time.perf_counter() - started)

    def _send_rows(
        self, path: str, rows: pa.Table, body: bytes, chunks: "_Chunker", counter: "_Stored"
    ) -> None:
        """Send one encoded piece; if the server's body limit is smaller than assumed (413),
        send it again in halves. Counts what was stored as it is stored."""
        try:
            self._request(
                "POST", path, data=body, headers={"Content-Type": frames.PARQUET}, retry=False
            )
            counter.add(rows.num_rows)
        except Invalid as error:
            if error.status != 413 or rows.num_rows < 2:
                raise
            # The server answers a too-large body before reading it and then closes the
            # connection; a pooled connection reused for the halves would fail.
            self._session.close()
            chunks.shrink(len(body))
            half = rows.num_rows // 2
            for part in (rows.slice(0, half), rows.slice(half)):
                self._send_rows(path, part, chunks.encode(part), chunks, counter)

    # ---- features ----

    def features(self) -> List[Feature]:
        """Every registered feature."""
        return [Feature.from_json(f) for f in self._json("GET", "/features")]

    def feature(self, feature: FeatureRef) -> Feature:
        """One feature, by name or id."""
        if isinstance(feature, Feature):
            return feature
        if isinstance(feature, int):
            return Feature.from_json(self._json("GET", f"/features/{feature}"))
        for found in self.features():
            if found.name == feature:
                return found
        raise NotFound(404, f"Feature '{feature}' not found", "GET", "/features")

    def register_feature(
        self,
        name: str,
        table: TableRef,
        entity_key: Union[str, Sequence[str]],
        sql: Optional[str] = None,
        aggregations: Optional[Sequence[Union[Aggregation, Dict[str, Any]]]] = None,
        engine: Optional[str] = None,
        *,
        filter: Optional[str] = None,
        description: Optional[str] = None,
    ) -> Feature:
        """Register a feature of a raw table, keyed by `entity_key` (a column, or a list of up to
        four that name an entity together): either `sql` (one SELECT
        over `data`, one row per entity, checked by the server before it is registered) or
        `aggregations` (windowed functions of the table's events, exact at every instant; an
        optional `filter` keeps the events it is true of). `engine` is `"polars"` (default) or
        `"spark"` for SQL features."""
        body: Dict[str, Any] = {
            "name": name,
            "raw_table_id": self._table_id(table),
            "entity_key": entity_key if isinstance(entity_key, str) else list(entity_key),
        }
        if sql is not None:
            body["computation_logic"] = sql
        if aggregations is not None:
            body["aggregations"] = [
                a.to_json() if isinstance(a, Aggregation) else dict(a) for a in aggregations
            ]
        if filter is not None:
            body["filter"] = filter
        if engine is not None:
            body["engine"] = engine
        if description is not None:
            body["description"] = description
        return Feature.from_json(self._json("POST", "/features", json=body))

    def delete_feature(self, feature: FeatureRef) -> None:
        """Delete a feature with its versions and served vectors."""
        self._request("DELETE", f"/features/{self._feature_id(feature)}")

    def _feature_id(self, feature: FeatureRef) -> int:
        if isinstance(feature, Feature):
            return feature.id
        if isinstance(feature, int):
            return feature
        return self.feature(feature).id

    # ---- versions, compute, backfill ----

    def versions(self, feature: FeatureRef) -> List[Version]:
        """A feature's versions, oldest first, with their freshness."""
        fid = self._feature_id(feature)
        return [Version.from_json(v) for v in self._json("GET", f"/features/{fid}/versions")]

    def version(self, feature: FeatureRef, version: str) -> Version:
        """One version of a feature, by its name (`"v1"`)."""
        for found in self.versions(feature):
            if found.version == version:
                return found
        raise NotFound(
            404, f"Version '{version}' of feature '{feature}' not found", "GET", "/versions"
        )

    def compute(self, feature: FeatureRef, version: str, as_of: Any = None) -> ComputeResult:
        """Compute `version` of a SQL feature over the table's rows (creating the version if
        it is new) and serve it as soon as this returns. With `as_of` (a datetime, naive
        meaning UTC, or RFC 3339 text), over the rows whose event time is at or before it,
        published as history valid from `as_of`."""
        body: Dict[str, Any] = {"version": version}
        if as_of is not None:
            body["as_of"] = format_time(as_of)
        fid = self._feature_id(feature)
        return ComputeResult.from_json(self._json("POST", f"/features/{fid}/compute", json=body))

    def backfill(
        self, feature: FeatureRef, version: str, start: Any, end: Any, every: Seconds
    ) -> List[Snapshot]:
        """One snapshot of `version` at each step from `start` to `end` inclusive (at most
        1,000 steps), each over the rows with event time at or before its step. The version is
        created first if it does not exist yet."""
        fid = self._feature_id(feature)
        try:
            vid = self.version(fid, version).id
        except NotFound:
            vid = self._json("POST", f"/features/{fid}/versions", json={"version": version})["id"]
        body = {
            "start": format_time(start),
            "end": format_time(end),
            "every_seconds": _seconds(every),
        }
        answer = self._json("POST", f"/features/{fid}/versions/{vid}/backfill", json=body)
        return [Snapshot.from_json(s) for s in answer]

    def snapshots(self, feature: FeatureRef, version: str) -> List[Snapshot]:
        """A version's snapshots, oldest first."""
        fid = self._feature_id(feature)
        vid = self.version(fid, version).id
        answer = self._json("GET", f"/features/{fid}/versions/{vid}/snapshots")
        return [Snapshot.from_json(s) for s in answer]

    # ---- serving ----

    def get_online_features(
        self,
        features: Sequence[Union[str, int, Feature]],
        entities: Iterable[Any],
        *,
        as_of: Any = None,
    ) -> OnlineFeatures:
        """The values a model gets now (or `as_of` an instant) for each entity and feature.

        `features` are references as the server takes them: a name (its newest active
        computed version), `"name@v2"`, a version id, or a `Feature`. `entities` are entity
        ids, or dicts of the entity's key (`{"user_id": "u1"}`). The answer keeps the request's
        order; `.to_pandas()`, `.to_polars()`, `.to_arrow()` or `.to_dicts()` give one row per
        entity and a column `<reference>__<value>` per value, null where the entity has none.
        Any number of entities: they are sent 10,000 a request.
        """
        refs = _references(features)
        if isinstance(entities, (str, bytes)) or frames.is_frame(entities):
            raise TypeError("entities is a list of entity ids or key dicts, not one id or a frame")
        ids = [_entity(e) for e in entities]
        # Dicts of several key columns go as objects; the server gives each feature the
        # columns it is keyed by.
        field_name = "entities" if any(isinstance(e, dict) for e in ids) else "entity_ids"
        body: Dict[str, Any] = {"features": _wire(features)}
        if as_of is not None:
            body["as_of"] = format_time(as_of)
        answers = []
        for start in range(0, max(len(ids), 1), BATCH_ENTITIES):
            body[field_name] = ids[start : start + BATCH_ENTITIES]
            answers.append(self._json("POST", "/feature-vectors/batch", json=body))
        _refuse_unresolved(answers[0].get("unresolved") or {}, "/feature-vectors/batch")
        versions = answers[0].get("versions") or {}
        schemas = {ref: self._value_schema(ref, versions.get(ref)) for ref in refs}
        # Key columns in the order the dicts gave them (the server's objects come back sorted).
        order: List[str] = []
        for e in ids:
            if isinstance(e, dict):
                order.extend(k for k in e if k not in order)
        return OnlineFeatures(refs, answers, schemas, order)

    def _value_schema(self, ref: str, version_id: Optional[int]) -> Optional[Dict[str, str]]:
        """A computed version's value columns and their types (its `output_schema` without
        the entity key), looked up once per version and kept: a version's SQL never changes.
        `None` for aggregation features (no version) and references by version id alone."""
        if version_id is None:
            return None
        if version_id in self._schemas:
            return self._schemas[version_id]
        name = ref.rsplit("@", 1)[0] if "@" in ref else ref
        if ref.isdigit():
            return None
        try:
            feature = self.feature(name)
            found = [v for v in self.versions(feature.id) if v.id == version_id]
        except NotFound:
            return None
        schema = None
        keys = feature.entity_key if isinstance(feature.entity_key, list) else [feature.entity_key]
        if found and found[0].output_schema:
            schema = {
                column: declared
                for column, declared in found[0].output_schema.items()
                if column not in keys
            }
        self._schemas[version_id] = schema
        return schema

    def get_vector(
        self, feature: Union[str, int, Feature], entity_id: Any, as_of: Any = None
    ) -> Dict[str, Any]:
        """One entity's values of one feature (by name, version id or `Feature`), as the server
        answers `GET /feature-vectors` (`feature_values`, `computed_at`, freshness...).
        `entity_id` is an id, or a dict of the key columns of a feature keyed by several
        (`{"user_id": "u1", "merchant_id": 7}`)."""
        entity = _entity(entity_id)
        params: Dict[str, Any] = (
            {k: str(v) for k, v in entity.items()}
            if isinstance(entity, dict)
            else {"entity_id": entity}
        )
        if isinstance(feature, Feature):
            params["feature_name"] = feature.name
        elif isinstance(feature, int):
            params["feature_version_id"] = feature
        else:
            params["feature_name"] = feature
        if as_of is not None:
            params["as_of"] = format_time(as_of)
        return self._json("GET", "/feature-vectors", params=params)

    # ---- training sets ----

    def get_training_set(
        self,
        labels: Any,
        features: Sequence[Union[str, int, Feature]],
        *,
        max_age: Optional[Seconds] = None,
        entity_column: str = "entity_id",
        timestamp_column: str = "timestamp",
        key_columns: Optional[Sequence[str]] = None,
    ) -> Any:
        """Point-in-time feature values for labelled rows, with the labels as they were given.

        `labels` has an entity id column and a timestamp column (`entity_column`,
        `timestamp_column`; datetimes of any unit, naive meaning UTC, or RFC 3339 text) and
        anything else. Each row gets, for each feature, the values in force at its timestamp
        (the snapshot valid then, or an aggregation evaluated then), null where there were
        none (or older than `max_age`); no row is dropped or moved. The answer is the same
        kind of frame (pandas in, pandas out; polars, polars; a pyarrow Table, a Table): the
        labels untouched, then a column `<reference>__<value>` per feature value, typed.
        Only the id and timestamp columns are sent, as an Arrow IPC file, and the answer comes
        back as one, which is read without decoding. A list of dicts is answered as a list of
        dicts (the server's JSON rows, with `features`).

        Features keyed by several columns: give `key_columns` (every key column any of the
        features uses, `["user_id", "merchant_id"]`) instead of `entity_column`; each feature
        joins on its own. A list of dicts just carries those columns.
        """
        refs = _references(features)
        params: List[Tuple[str, Any]] = [("features", r) for r in refs]
        if max_age is not None:
            params.append(("max_age_seconds", _seconds(max_age)))
        if isinstance(labels, list):
            rows = [_json_label(row, entity_column, timestamp_column) for row in labels]
            body: Dict[str, Any] = {"features": _wire(features), "rows": rows}
            if max_age is not None:
                body["max_age_seconds"] = _seconds(max_age)
            answer = self._json("POST", "/training-sets", json=body)
            _refuse_unresolved(answer.get("unresolved") or {}, "/training-sets")
            return answer["rows"]
        kind = frames.kind_of(labels)
        names = list(key_columns) if key_columns else [entity_column]
        keys = _select(labels, kind, names + [timestamp_column])
        ids = []
        for i in range(len(names)):
            column = keys.column(i)
            ids.append(column if pa.types.is_string(column.type) else column.cast(pa.string()))
        sent_names = names if key_columns else ["entity_id"]
        sent = pa.table(ids + [keys.column(len(names))], names=sent_names + ["timestamp"])
        response = self._request(
            "POST",
            "/training-sets",
            data=frames.arrow_bytes(sent),
            params=params,
            headers={"Content-Type": frames.ARROW, "Accept": frames.ARROW},
        )
        # The answer repeats the ids and timestamps sent; the labels already hold them.
        values = frames.read_arrow(response.content, leave_out=tuple(sent_names) + ("timestamp",))
        if values.num_rows != sent.num_rows:
            raise Invalid(
                400,
                f"the server answered {values.num_rows} rows for {sent.num_rows} labels",
                "POST",
                "/training-sets",
            )
        taken = set(_columns(labels, kind))
        clash = [c for c in values.column_names if c in taken]
        if clash:
            raise Invalid(
                400,
                f"the labels already have columns named {', '.join(clash)}",
                "POST",
                "/training-sets",
            )
        return _append(labels, kind, values)

    def write_training_dataset(
        self,
        labels: TableRef,
        features: Sequence[Union[str, int, Feature]],
        *,
        max_age: Optional[Seconds] = None,
        time_column: Optional[str] = None,
    ) -> TrainingDataset:
        """A training set too big to send and receive: the labelled rows are a raw table's
        (`labels`, by name, id or `Table`; the version current now), and the server writes the
        answer as Parquet files in its data location, which the result names (`files`; read
        them with `polars.read_parquet(dataset.files)` or `pyarrow.dataset`).

        The table has `entity_id` (or each feature's key columns by name), a time column
        (`time_column`; by default its `timestamp` column, else its event time column), and
        anything else, which the files keep; they call the time column `timestamp` and add
        `<reference>__<value>` per feature value. Every feature must resolve.
        """
        body: Dict[str, Any] = {
            "features": _wire(features),
            "labels": {"raw_table_id": self._table_id(labels)},
        }
        if time_column is not None:
            body["labels"]["time_column"] = time_column
        if max_age is not None:
            body["max_age_seconds"] = _seconds(max_age)
        return TrainingDataset.from_json(
            self._json("POST", "/training-sets/datasets", json=body)
        )


class _Stored:
    """Rows and requests stored so far by one ingest (written by its sending thread)."""

    def __init__(self) -> None:
        self.rows = 0
        self.requests = 0
        self._lock = threading.Lock()

    def add(self, rows: int) -> None:
        with self._lock:
            self.rows += rows
            self.requests += 1


class _Chunker:
    """Cuts a frame into Parquet bodies under the body limit, converting each slice only when
    it is its turn (so converting the next overlaps sending the last): the first size from a
    sample of rows, then from what the slices really encoded to."""

    SAMPLE_ROWS = 10_000

    def __init__(
        self, total: int, rows_of: Callable[[int, int], pa.Table], limit: int, compression: str
    ) -> None:
        self.total = total
        self.rows_of = rows_of
        self.compression = compression
        self.limit = limit
        self.target = limit // 2
        sample = rows_of(0, min(total, self.SAMPLE_ROWS))
        per_row = max(len(self.encode(sample)) / max(sample.num_rows, 1), 1e-3)
        self.rows_per_chunk = max(1, int(self.target / per_row))

    def expected_requests(self) -> int:
        return -(-self.total // self.rows_per_chunk)

    def encode(self, rows: pa.Table) -> bytes:
        return frames.parquet_bytes(rows, self.compression, dictionary=False)

    def shrink(self, refused: int) -> None:
        self.limit = max(1, refused // 2)
        self.target = self.limit // 2

    def __iter__(self) -> Iterator[Tuple[pa.Table, bytes]]:
        start = 0
        while start < self.total:
            rows = self.rows_of(start, self.rows_per_chunk)
            body = self.encode(rows)
            while len(body) > self.limit and rows.num_rows > 1:
                rows = rows.slice(0, rows.num_rows // 2)
                body = self.encode(rows)
            per_row = max(len(body) / rows.num_rows, 1e-3)
            self.rows_per_chunk = max(1, int(self.target / per_row))
            start += rows.num_rows
            yield rows, body


def _progress(
    total: int, wanted: Optional[bool], requests_expected: int
) -> Callable[[Optional[int]], None]:
    """A progress callback: rows stored so far, or None at the end. Shown by default in a
    notebook or on a terminal, when there is more than one request."""
    interactive = "ipykernel" in sys.modules or sys.stderr.isatty()
    show = wanted if wanted is not None else (interactive and requests_expected > 1)
    if not show:
        return lambda _rows: None
    shown = [0]
    try:
        from tqdm.auto import tqdm  # type: ignore[import-untyped]

        bar = tqdm(total=total, unit="rows", unit_scale=True, desc="ingest")

        def tick(rows: Optional[int]) -> None:
            if rows is None:
                bar.close()
            else:
                bar.update(rows - shown[0])
                shown[0] = rows

        return tick
    except ImportError:

        def plain(rows: Optional[int]) -> None:
            if rows is None:
                sys.stderr.write("\n")
            else:
                width = 30
                filled = int(width * rows / total)
                sys.stderr.write(
                    f"\ringest [{'#' * filled}{'.' * (width - filled)}] {rows:,}/{total:,} rows"
                )
            sys.stderr.flush()

        return plain


def _seconds(value: Seconds) -> int:
    if isinstance(value, timedelta):
        return int(value.total_seconds())
    return int(value)


def _reference(feature: Union[str, int, Feature]) -> str:
    if isinstance(feature, Feature):
        return feature.name
    return str(feature)


def _entity(entity: Any) -> Union[str, Dict[str, Union[str, int]]]:
    """An id, or the key values of an entity named by several columns."""
    if isinstance(entity, dict):
        if not entity:
            raise Invalid(400, "an entity dict names no key column")
        if len(entity) > 1:
            return {str(k): _key_value(v) for k, v in entity.items()}
        entity = next(iter(entity.values()))
    return _entity_id(entity)


def _key_value(value: Any) -> Union[str, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return _entity_id(value)


def _entity_id(entity: Any) -> str:
    if entity is None:
        raise Invalid(400, "an entity id is missing (None)")
    if isinstance(entity, float) and entity.is_integer():
        entity = int(entity)  # as a training set's float id column becomes text: 1.0 is "1"
    return str(entity)


def _references(features: Any) -> List[str]:
    if isinstance(features, (str, int, Feature)):
        raise TypeError("features is a list of references: wrap one in a list")
    return [_reference(f) for f in features]


def _wire(features: Any) -> List[Union[str, int]]:
    """References as a JSON body carries them: a version id as a number (the text "7" would
    name a feature called 7)."""
    return [
        f if isinstance(f, int) and not isinstance(f, bool) else _reference(f) for f in features
    ]


def _refuse_unresolved(unresolved: Dict[str, str], path: str) -> None:
    """A frame has a column per value: a reference that names nothing would silently have
    none, so it is an error, as the server makes it one for table answers."""
    if unresolved:
        reasons = "; ".join(f"{ref}: {why}" for ref, why in unresolved.items())
        raise NotFound(404, f"Feature references did not resolve: {reasons}", "POST", path)


def _json_label(row: Dict[str, Any], entity_column: str, timestamp_column: str) -> Dict[str, Any]:
    """A label row as the JSON API takes it: `entity_id` and `timestamp` (RFC 3339 text)."""
    row = dict(row)
    if entity_column != "entity_id" and entity_column in row:
        row["entity_id"] = row.pop(entity_column)
    if timestamp_column != "timestamp" and timestamp_column in row:
        row["timestamp"] = row.pop(timestamp_column)
    if row.get("timestamp") is not None and not isinstance(row["timestamp"], str):
        row["timestamp"] = format_time(row["timestamp"])
    return row


def _columns(frame: Any, kind: str) -> List[str]:
    if kind == "arrow":
        return list(frame.schema.names)
    return [str(c) for c in frame.columns]


def _select(frame: Any, kind: str, names: List[str]) -> pa.Table:
    present = _columns(frame, kind)
    for name in names:
        if name not in present:
            raise Invalid(400, f"the labels have no '{name}' column", "POST", "/training-sets")
    if kind == "pandas":
        # Column by column: selecting a sub-frame first would copy it.
        return pa.table([pa.Array.from_pandas(frame[n]) for n in names], names=names)
    if kind == "polars":
        return frame.select(names).to_arrow()
    table = frames.to_arrow(frame)
    return table.select(names)


def _append(labels: Any, kind: str, values: pa.Table) -> Any:
    if kind == "pandas":
        import pandas as pd

        # The labels copied once (the answer must not share their memory), the values frame
        # (new, ours) taken as it is: letting concat copy everything cost 24 ms of 1M rows x
        # 10 values. pandas 3 copies lazily and deprecates the keyword.
        lazy = {} if int(pd.__version__.split(".")[0]) >= 3 else {"copy": False}
        return pd.concat(
            [labels.copy(), frames.from_arrow(values, "pandas", labels.index)], axis=1, **lazy
        )
    if kind == "polars":
        return labels.hstack(frames.from_arrow(values, "polars"))
    table = frames.to_arrow(labels)
    for name, column in zip(values.column_names, values.columns):
        table = table.append_column(name, column)
    return table
