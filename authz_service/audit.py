"""The audit trail: one JSON line per decision, to stdout or a file (GATE_AUDIT_LOG).

The line carries NGINX's request id (X-Request-Id, also in NGINX's JSON access log and sent to
MLflow), so one request can be followed through all three. It holds who asked (user and client),
from where, what (method, path without the query string, resource#scope) and the answer with its
reason, the decision-cache layer and the time taken. Never a token, cookie, password or query string.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .checks import Verdict

MAX_FIELD = 512
REOPEN_CHECK_SECONDS = 1.0


@dataclass(frozen=True)
class Request:
    """What NGINX told the gate about the request being checked."""

    request_id: str
    client_address: str
    method: str
    uri: str
    started: float

    @property
    def path(self) -> str:
        # Query strings can carry anything a client chose to put there; the path is what was decided on.
        return self.uri.partition("?")[0]


class AuditLog:
    """`destination` is "-" (stdout), "off", or a file path.

    Each line is one os.write to a descriptor opened with O_APPEND, so the lines of several worker
    processes never interleave and nothing waits in a buffer. A file that logrotate moved away is
    noticed within a second and opened again.
    """

    def __init__(self, destination: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.enabled = destination != "off"
        self._path = None if destination in ("-", "off") else Path(destination)
        self._clock = clock
        self._fd = 1 if self._path is None else self._open()
        self._checked_at = clock()

    def record(self, request: Request, verdict: Verdict, cache_layer: str) -> None:
        if not self.enabled:
            return
        if self._path is not None and self._clock() - self._checked_at >= REOPEN_CHECK_SECONDS:
            self._reopen_if_moved()
        os.write(self._fd, (line(request, verdict, cache_layer, time.perf_counter()) + "\n").encode())

    def _open(self) -> int:
        assert self._path is not None
        return os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)

    def _reopen_if_moved(self) -> None:
        self._checked_at = self._clock()
        try:
            moved = os.stat(self._path).st_ino != os.fstat(self._fd).st_ino  # type: ignore[arg-type]
        except FileNotFoundError:
            moved = True
        if moved:
            os.close(self._fd)
            self._fd = self._open()


def timestamp(now: float) -> str:
    """ISO 8601 UTC with milliseconds; the part up to the second is formatted once per second
    (datetime's formatting on every line cost more than the rest of the line)."""
    second = int(now)
    return f"{_second(second)}.{int((now - second) * 1000):03d}Z"


@lru_cache(maxsize=2)
def _second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def line(request: Request, verdict: Verdict, cache_layer: str, now: float) -> str:
    fields = {
        "time": timestamp(time.time()),
        "source": "gate",
        "request_id": request.request_id,
        "user": verdict.user,
        "client": verdict.client,
        "client_address": request.client_address,
        "method": request.method,
        "path": request.path,
        "permission": verdict.permission,
        "verdict": verdict.outcome,
        "status": verdict.status,
        "reason": verdict.reason,
        "cache": cache_layer,
        "latency_s": round(now - request.started, 6),
    }
    return json.dumps(
        {key: value[:MAX_FIELD] if isinstance(value, str) else value for key, value in fields.items()},
        ensure_ascii=False,
    )
