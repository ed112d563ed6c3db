"""Errors the server answered, as exceptions that carry its status and `detail`."""

from __future__ import annotations

from typing import Any, Mapping, Optional


class FeatureStoreError(Exception):
    """The server refused or failed a request.

    `status` is the HTTP status and `detail` the server's own message (a string, or FastAPI's
    list of field errors for a 422).
    """

    def __init__(self, status: int, detail: Any, method: str = "", path: str = "") -> None:
        self.status = status
        self.detail = detail
        self.method = method
        self.path = path
        super().__init__(f"{status} {method} {path}: {_text(detail)}".replace("  ", " "))

    def __reduce__(self) -> Any:
        # Rebuilt from its fields, so that it survives pickling (joblib, multiprocessing).
        return (type(self), (self.status, self.detail, self.method, self.path), self.__dict__)


class Invalid(FeatureStoreError):
    """The request was refused as it stands (400, 409, 413, 415, 422): fix it and send again."""


class NotFound(FeatureStoreError):
    """What the request named does not exist (404)."""


class AccessDenied(FeatureStoreError):
    """No API key, an unknown one (401), or a read key asking for a change (403)."""


class Overloaded(FeatureStoreError):
    """The server is busy (503) and changed nothing; `retry_after` is its hint in seconds.

    The client retries these itself (`Client(retries=...)`); this is raised when the retries
    ran out.
    """

    def __init__(
        self,
        status: int,
        detail: Any,
        method: str = "",
        path: str = "",
        retry_after: Optional[float] = None,
    ) -> None:
        super().__init__(status, detail, method, path)
        self.retry_after = retry_after

    def __reduce__(self) -> Any:
        return (
            type(self),
            (self.status, self.detail, self.method, self.path, self.retry_after),
            self.__dict__,
        )


class ServerError(FeatureStoreError):
    """The server failed (a 5xx other than 503): a bug to report with the `x-request-id`."""


def _text(detail: Any) -> str:
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, Mapping):
                loc = ".".join(str(p) for p in item.get("loc", []))
                parts.append(f"{loc}: {item.get('msg', '')}" if loc else str(item.get("msg", "")))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(detail)


def error_for(
    status: int, detail: Any, method: str, path: str, retry_after: Optional[float]
) -> FeatureStoreError:
    """The exception class a status maps to."""
    if status == 404:
        return NotFound(status, detail, method, path)
    if status in (401, 403):
        return AccessDenied(status, detail, method, path)
    if status == 503:
        return Overloaded(status, detail, method, path, retry_after)
    if 400 <= status < 500:
        return Invalid(status, detail, method, path)
    return ServerError(status, detail, method, path)
