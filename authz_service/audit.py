"""The audit trail: one JSON line per decision, to stdout or a file (GATE_AUDIT_LOG).

The line carries NGINX's request id (X-Request-Id, also in NGINX's JSON access log and sent to
MLflow), so one request can be followed through all three. It holds who asked (user and client),
from where, what (method, path without the query string, resource#scope) and the answer with its
reason, the decision-cache layer and the time taken. Never a token, cookie, password or query string.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from logging.handlers import WatchedFileHandler

from .checks import Verdict

MAX_FIELD = 512


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
    """`destination` is "-" (stdout), "off", or a file path (reopened when logrotate moves it)."""

    def __init__(self, destination: str) -> None:
        self.enabled = destination != "off"
        self._logger = logging.Logger("mlflow_gate.audit", logging.INFO)
        if self.enabled:
            handler = logging.StreamHandler(sys.stdout) if destination == "-" else WatchedFileHandler(destination)
            handler.setFormatter(logging.Formatter("%(message)s"))
            self._logger.addHandler(handler)

    def record(self, request: Request, verdict: Verdict, cache_layer: str) -> None:
        if not self.enabled:
            return
        self._logger.info(line(request, verdict, cache_layer, time.perf_counter()))


def line(request: Request, verdict: Verdict, cache_layer: str, now: float) -> str:
    fields = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
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
