"""Refusals as exceptions: status and the server's detail; busy servers retried; keys."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Iterator, List

import pytest
from conftest import Server

import feature_store

READ_KEY = "reader-key-0123456789abcdef"
WRITE_KEY = "writer-key-0123456789abcdef"


@pytest.fixture(scope="module")
def keyed() -> Iterator[Server]:
    running = Server({"API_KEYS": f"{READ_KEY}:read,{WRITE_KEY}:write"})
    yield running
    running.stop()


def test_without_a_key_a_keyed_server_raises_access_denied_401(keyed):
    with pytest.raises(feature_store.AccessDenied) as raised:
        feature_store.Client(keyed.url, api_key="").tables()
    assert raised.value.status == 401


def test_a_read_key_may_read_but_not_change(keyed, name):
    reader = feature_store.Client(keyed.url, api_key=READ_KEY)
    assert isinstance(reader.tables(), list)
    with pytest.raises(feature_store.AccessDenied) as raised:
        reader.create_table(name, schema={"k": "string"})
    assert raised.value.status == 403


def test_the_key_and_url_come_from_the_environment(keyed, name, monkeypatch):
    monkeypatch.setenv("FEATURE_STORE_URL", keyed.url + "/api/v1")
    monkeypatch.setenv("FEATURE_STORE_API_KEY", WRITE_KEY)
    client = feature_store.Client()
    assert client.url == keyed.url
    assert client.create_table(name, schema={"k": "string"}).name == name


class Busy:
    """An HTTP peer that answers 503 with `Retry-After: 0` a given number of times, then 200:
    the client's retry logic, which a real server's overload cannot be timed to exercise."""

    def __init__(self, busy_times: int) -> None:
        self.busy_times = busy_times
        self.seen: List[str] = []
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                peer.seen.append(self.path)
                if len(peer.seen) <= peer.busy_times:
                    body = json.dumps({"detail": "The compute queue is full; retry later"})
                    self.send_response(503)
                    self.send_header("Retry-After", "0")
                else:
                    body = "[]"
                    self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *_: object) -> None:
                pass

        self.http = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


def test_a_busy_answer_is_retried_until_it_succeeds():
    busy = Busy(busy_times=2)
    try:
        assert feature_store.Client(busy.url, retries=3).tables() == []
        assert len(busy.seen) == 3
    finally:
        busy.close()


def test_when_retries_run_out_overloaded_carries_the_retry_hint():
    busy = Busy(busy_times=10)
    try:
        with pytest.raises(feature_store.Overloaded) as raised:
            feature_store.Client(busy.url, retries=2).tables()
        assert raised.value.status == 503
        assert raised.value.retry_after == 0.0
        assert raised.value.detail == "The compute queue is full; retry later"
        assert len(busy.seen) == 3
    finally:
        busy.close()


def test_a_422_keeps_fastapis_field_list_as_its_detail(fs):
    with pytest.raises(feature_store.Invalid) as raised:
        fs._json("POST", "/raw-tables", json={"schema_definition": {}})
    assert raised.value.status == 422
    assert isinstance(raised.value.detail, list)
    assert "name" in str(raised.value)


def test_errors_survive_pickling_as_joblib_and_multiprocessing_send_them():
    import pickle

    error = feature_store.Overloaded(503, "busy", "POST", "/x", retry_after=2.0)
    error.rows_ingested = 7
    again = pickle.loads(pickle.dumps(error))
    assert (type(again), again.status, again.detail, again.retry_after) == (
        feature_store.Overloaded,
        503,
        "busy",
        2.0,
    )
    assert again.rows_ingested == 7
    assert str(again) == str(error)
    assert pickle.loads(pickle.dumps(feature_store.NotFound(404, "gone"))).detail == "gone"
