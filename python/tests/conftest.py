"""A real server for the SDK's tests: the release binary on a free port, over a fresh SQLite
database and data directory, started once for the session and stopped at its end.

The binary is `$FEATURE_STORE_BINARY`, else `$CARGO_TARGET_DIR/release/feature-store`, else
`target/release/feature-store` of this checkout (build it with `cargo build --release`).
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Dict, Iterator, Optional

import pytest
import requests

import feature_store

ROOT = Path(__file__).resolve().parents[2]
# The `listening` line of the JSON log names the address bound (PORT=0 picks a free one).
LISTENING = re.compile(r'"addr":"([^"]+)"[^\n]*"listening"|"listening"[^\n]*"addr":"([^"]+)"')


def binary() -> Path:
    if os.environ.get("FEATURE_STORE_BINARY"):
        return Path(os.environ["FEATURE_STORE_BINARY"])
    target = os.environ.get("CARGO_TARGET_DIR")
    path = Path(target) if target else ROOT / "target"
    return path / "release" / "feature-store"


class Server:
    """One feature-store process; `url` once it listens."""

    def __init__(self, env: Optional[Dict[str, str]] = None) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="fs-python-")
        self.log_path = Path(self.dir.name) / "server.log"
        settings = {
            **os.environ,
            "DATABASE_URL": f"sqlite:{self.dir.name}/fs.db",
            "PORT": "0",
            "REDIS_URL": "",
            "RUST_LOG": "info",
            "LOG_FORMAT": "json",
            **(env or {}),
        }
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [str(binary())], env=settings, stdout=self.log, stderr=subprocess.STDOUT
        )
        try:
            self.url = self._wait_for_address()
        except BaseException:
            self.process.kill()
            self.process.wait()
            self.log.close()
            raise

    def _wait_for_address(self) -> str:
        """The address from the `listening` log line, then /health answering: evidence, not
        a fixed sleep."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited: {self.log_path.read_text()}")
            found = LISTENING.search(self.log_path.read_text())
            if found:
                url = f"http://{found.group(1) or found.group(2)}"
                try:
                    if requests.get(f"{url}/health", timeout=1).ok:
                        return url
                except requests.ConnectionError:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"the server did not start: {self.log_path.read_text()}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
        self.dir.cleanup()


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    if not binary().exists():
        pytest.fail(f"no server binary at {binary()}: run `cargo build --release` first")
    running = Server()
    yield running
    running.stop()


@pytest.fixture
def fs(server: Server) -> Iterator[feature_store.Client]:
    with feature_store.Client(server.url) as client:
        yield client


@pytest.fixture
def name() -> str:
    """A fresh name, so tests sharing the server never meet."""
    return f"t_{uuid.uuid4().hex[:10]}"
