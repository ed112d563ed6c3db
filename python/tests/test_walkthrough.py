"""docs/python.md is executed: every ```python block, in order, in one namespace, against a
fresh server, so the walkthrough shows what the SDK really does."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import ROOT, Server

PAGE = ROOT / "docs" / "python.md"


def blocks() -> list:
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)


def test_the_walkthrough_runs_as_written(monkeypatch, tmp_path: Path):
    fresh = Server()  # its own database: the page registers fixed names
    try:
        monkeypatch.setenv("FEATURE_STORE_URL", fresh.url)
        monkeypatch.delenv("FEATURE_STORE_API_KEY", raising=False)
        monkeypatch.chdir(tmp_path)
        namespace: dict = {}
        found = blocks()
        assert len(found) >= 6
        for number, code in enumerate(found, 1):
            exec(compile(code, f"{PAGE.name} block {number}", "exec"), namespace)
    finally:
        fresh.stop()
