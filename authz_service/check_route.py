"""`/_gate/check`, the auth subrequest, served as a bare ASGI handler in front of FastAPI.

NGINX calls the check once for every MLflow request, so its cost is the gate's cost. FastAPI's
routing, dependency solving, middleware and response classes took more CPU than the check itself,
so `GateApp` hands the check's requests straight to `CheckEndpoint`, which reads the few headers it
needs from the ASGI scope and answers with two ASGI messages. Every other path is FastAPI's.
An exception here reaches uvicorn, which answers 500; NGINX turns that into a 503, never an allow.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from fastapi import FastAPI
from starlette.requests import cookie_parser
from starlette.types import Receive, Scope, Send

from . import audit, workspaces
from .cache import lookup_layer
from .checks import Checker, Verdict
from .credentials import CredentialSources
from .metrics import Metrics
from .signin import SESSION_COOKIE, signin_location

CHECK_PATH = "/_gate/check"
WORKSPACE_HEADER = workspaces.HEADER.encode("latin-1")
ALLOWED_METHODS = ("GET", "HEAD")
"""An auth_request subrequest is always a GET, whatever the client's method was."""

_NOT_ALLOWED = Verdict(405, {"Allow": ", ".join(ALLOWED_METHODS)})
_EMPTY_BODY = {"type": "http.response.body", "body": b""}


class CheckEndpoint:
    """Turns NGINX's subrequest (X-Original-Method, X-Original-URI, credentials) into a verdict."""

    def __init__(
        self,
        checker: Checker,
        credentials: CredentialSources,
        signin_enabled: bool,
        metrics: Metrics,
        audit_log: audit.AuditLog,
    ) -> None:
        self._checker = checker
        self._credentials = credentials
        self._signin_enabled = signin_enabled
        self._metrics = metrics
        self._audit = audit_log

    async def __call__(self, scope: Scope, _receive: Receive, send: Send) -> None:
        if scope["method"] in ALLOWED_METHODS:
            verdict = await self.verdict(request_headers(scope), workspace_headers(scope))
        else:
            verdict = _NOT_ALLOWED
        await send({"type": "http.response.start", "status": verdict.status, "headers": raw_headers(verdict)})
        await send(_EMPTY_BODY)

    async def verdict(self, headers: Mapping[str, str], workspace_values: Sequence[str] = ()) -> Verdict:
        """`workspace_values`: every X-MLFLOW-WORKSPACE value, repeats kept (the gate refuses them)."""
        method = headers.get("x-original-method", "")
        uri = headers.get("x-original-uri", "")
        checked = audit.Request(
            request_id=headers.get("x-request-id", ""),
            client_address=headers.get("x-real-ip", ""),
            method=method,
            uri=uri,
            started=time.perf_counter(),
        )
        lookup_layer.set("")
        session_id = session_cookie(headers)
        credentials = self._credentials.for_request(method, headers, session_id, checked.client_address)
        signin = signin_location(uri) if self._signin_enabled and is_navigation(method, headers) else None
        offer_basic = self._credentials.basic is not None and not is_browser(headers, session_id)
        verdict = await self._checker.check(method, uri, credentials, signin, offer_basic, workspace_values)
        layer = lookup_layer.get()
        if layer:
            self._metrics.cache_lookups.labels(layer).inc()
        self._metrics.check_seconds.observe(time.perf_counter() - checked.started)
        self._audit.record(checked, verdict, layer)
        return verdict


class GateApp(FastAPI):
    """FastAPI for every endpoint except the check, which skips the framework (see module doc)."""

    def __init__(self, check: CheckEndpoint, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self._check = check

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == CHECK_PATH:
            await self._check(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def request_headers(scope: Scope) -> dict[str, str]:
    """The request's headers by lower-case name (ASGI lowers them); the first of repeats wins."""
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in reversed(scope["headers"])}


def workspace_headers(scope: Scope) -> list[str]:
    return [value.decode("latin-1") for name, value in scope["headers"] if name == WORKSPACE_HEADER]


def raw_headers(verdict: Verdict) -> list[tuple[bytes, bytes]]:
    headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in verdict.headers.items()]
    headers.append((b"content-length", b"0"))
    return headers


def is_navigation(method: str, headers: Mapping[str, str]) -> bool:
    """A browser loading a page (sent to sign-in), as opposed to a script or API client (gets 401)."""
    if method not in ("GET", "HEAD"):
        return False
    mode = headers.get("sec-fetch-mode")
    if mode is not None:
        return mode == "navigate"
    return "text/html" in headers.get("accept", "")


def session_cookie(headers: Mapping[str, str]) -> str | None:
    """The gate's session id, if the request carries its cookie (parsed only when there are cookies)."""
    cookie = headers.get("cookie")
    return cookie_parser(cookie).get(SESSION_COOKIE) if cookie else None


def is_browser(headers: Mapping[str, str], session_id: str | None) -> bool:
    """Browsers send Sec-Fetch-* (or ask for HTML, or hold our cookie); they must never see a Basic
    challenge, which would open their native password prompt instead of the sign-in page."""
    return (
        "sec-fetch-mode" in headers
        or "sec-fetch-site" in headers
        or "origin" in headers
        or "text/html" in headers.get("accept", "")
        or session_id is not None
    )
