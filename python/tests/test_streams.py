"""Streams from Python: a table follows a real NATS JetStream stream ($TEST_NATS_URL, else the
one on 127.0.0.1:4222 that .ci/run starts), published to with nats-py."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid

import pytest

import feature_store

NATS_URL = os.environ.get("TEST_NATS_URL") or "nats://127.0.0.1:4222"


def publish(stream: str, payloads: list) -> None:
    """Make the JetStream stream `stream` (in memory, subjects `stream.>`) if need be, and
    publish each payload, waiting for the server's acknowledgements."""
    import nats

    async def run() -> None:
        client = await nats.connect(NATS_URL)
        try:
            js = client.jetstream()
            await js.add_stream(name=stream, subjects=[f"{stream}.>"], storage="memory")
            for payload in payloads:
                await js.publish(f"{stream}.tx", payload.encode())
        finally:
            await client.close()

    asyncio.run(run())


def eventually(check, seconds: float = 60.0):
    """`check()` once it is truthy; its last value otherwise, after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def test_a_table_follows_a_nats_stream_from_python_and_stops(fs, name):
    stream = f"PY_{uuid.uuid4().hex}"
    table = fs.create_table(name, schema={"user_id": "string", "amount": "float"})
    publish(stream, [json.dumps({"user_id": f"u{i}", "amount": float(i)}) for i in range(1, 6)])

    followed = fs.follow_nats(table, NATS_URL, stream, max_batch_interval_ms=50)
    assert isinstance(followed, feature_store.Stream)
    assert (followed.type, followed.status) == ("nats", "starting")
    assert followed.raw["stream"] == stream

    def committed():
        state = fs.stream(table)
        return state if state.partitions and state.partitions[0]["committed_offset"] == 5 else None

    state = eventually(committed)
    assert state, fs.stream(table)
    assert state.status == "running"
    assert state.events_committed == 5
    assert state.rejected == 0
    assert fs.table(table).row_count == 5

    fs.stop_following(table)
    with pytest.raises(feature_store.NotFound):
        fs.stream(table)


def test_a_kafka_source_the_server_refuses_raises_invalid_with_its_reason(fs, name):
    table = fs.create_table(name, schema={"user_id": "string"})
    with pytest.raises(feature_store.Invalid) as refused:
        fs.follow_kafka(table, "kafka://broker:9092", "tx")
    assert "host:port" in refused.value.detail
    with pytest.raises(feature_store.NotFound):
        fs.stream(table)
