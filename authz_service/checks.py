"""The auth-subrequest verdict: route, credentials, decision, in that order, failing closed.

NGINX only understands 2xx (allow), 401 and 403 from an auth subrequest; anything else becomes a
500. Every outcome here is therefore one of those, or 503 when Keycloak cannot answer.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from urllib.parse import quote

from . import workspaces
from .credentials import Credentials, CredentialsRejected, CredentialsUnavailable, CrossSiteRefused, TooManyFailures
from .decisions import Authorizer
from .metrics import Metrics
from .routes import Permission, Public, Refusal, RouteMap
from .tokens import Identity, SigningKeysUnavailable, TokenError, TokenValidator
from .uma import KeycloakUnavailable, TokenRejected

log = logging.getLogger(__name__)

_UNSAFE_REASON = re.compile(r"[^A-Za-z0-9 #._:/@()+-]")


@dataclass(frozen=True)
class Verdict:
    """The answer to NGINX (status, headers) plus what the audit line and metrics say about it."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    outcome: str = ""  # allowed, denied, unauthenticated, unmapped, unavailable, public, cross_site, throttled
    reason: str = ""
    permission: str = ""  # resource#scope, when the route maps to one
    user: str = ""
    client: str = ""


class Checker:
    def __init__(
        self,
        realm: str,
        routes: RouteMap,
        tokens: TokenValidator,
        authorizer: Authorizer,
        metrics: Metrics,
        workspaces_enabled: bool = False,
    ) -> None:
        self._realm = realm
        self._workspaces_enabled = workspaces_enabled
        self._routes = routes
        self._tokens = tokens
        self._authorizer = authorizer
        self._metrics = metrics

    async def check(
        self,
        method: str,
        uri: str,
        credentials: Credentials,
        signin: str | None = None,
        offer_basic: bool = False,
        workspace_headers: Sequence[str] = (),
    ) -> Verdict:
        """`signin` is where to send a browser navigation that turns out to be unauthenticated;
        `offer_basic` adds a Basic challenge to a 401, which must never happen for a browser (it
        would open the browser's own password prompt); `workspace_headers` are the request's
        X-MLFLOW-WORKSPACE values (read with workspaces on)."""
        verdict = await self._check(method, uri, credentials, workspace_headers)
        self._metrics.checks.labels(verdict.outcome).inc()
        if verdict.permission:
            self._metrics.permission_checks.labels(verdict.permission, verdict.outcome).inc()
        if verdict.status == 401 and signin is not None:
            return replace(verdict, headers={**verdict.headers, "X-Gate-Signin": signin})
        if verdict.status == 401 and offer_basic:
            challenge = f'{verdict.headers["WWW-Authenticate"]}, Basic realm="{self._realm}", charset="UTF-8"'
            return replace(verdict, headers={**verdict.headers, "WWW-Authenticate": challenge})
        return verdict

    async def _check(self, method: str, uri: str, credentials: Credentials, workspace_headers: Sequence[str]) -> Verdict:
        if not method or not uri:
            return self._forbidden("unmapped", "the gate was called without the original method and URI")
        route = self._routes.classify(method, uri)
        if isinstance(route, Public):
            return Verdict(200, outcome="public", reason="public route")
        if isinstance(route, Refusal):
            log.warning("refused unmapped or ambiguous request: %s", route.reason)
            return self._forbidden("unmapped", route.reason)
        wanted = f"{route.resource}#{route.scope}"
        workspace = None
        needed = route
        if self._workspaces_enabled:
            try:
                workspace = workspaces.requested_workspace(workspace_headers)
            except workspaces.InvalidWorkspace as error:
                return replace(self._forbidden("denied", str(error)), permission=wanted)
            needed = workspaces.permission_in(workspace, method, uri, route)
        try:
            token = await credentials()
        except CredentialsUnavailable as error:
            log.error("cannot read or refresh the session or exchange Basic credentials: %s", error)
            return Verdict(503, outcome="unavailable", reason="session store or Keycloak unavailable", permission=wanted)
        except CredentialsRejected as error:
            self._metrics.token_refusals.labels("basic_rejected").inc()
            return replace(self._unauthenticated("invalid_token", str(error)), permission=wanted)
        except CrossSiteRefused as error:
            log.warning("%s (%s %s)", error, method, uri)
            return replace(self._forbidden("cross_site", str(error)), permission=wanted)
        except TooManyFailures as error:
            return replace(self._throttled(error.retry_after), permission=wanted)
        if token is None:
            self._metrics.token_refusals.labels("missing").inc()
            return replace(self._unauthenticated(None, "sign in or send a Bearer token"), permission=wanted)
        try:
            identity = await self._tokens.validate(token)
        except TokenError as error:
            self._metrics.token_refusals.labels(error.reason).inc()
            return replace(self._unauthenticated("invalid_token", str(error)), permission=wanted)
        except SigningKeysUnavailable as error:
            log.error("cannot check tokens: %s", error)
            return Verdict(503, outcome="unavailable", reason="signing keys unavailable", permission=wanted)
        return await self._decide(identity, route, needed, workspace, workspaces.is_listing(method, uri))

    async def _decide(
        self, identity: Identity, route: Permission, permission: Permission, workspace: str | None, listing: bool
    ) -> Verdict:
        """`permission` is what Keycloak is asked about: the route's own, or with workspaces on
        (`workspace` set) the workspace's. Metrics and audit name the route's permission; refusals
        also name the workspace."""
        wanted = str(route)
        who = {"permission": wanted, "user": identity.username, "client": identity.client}
        readable = workspaces.ALL
        try:
            if workspace is None:
                allowed = await self._authorizer.is_allowed(identity, permission)
            else:
                grants = await self._authorizer.grants(identity)
                allowed = workspaces.is_granted(grants, permission)
                if listing:
                    readable = workspaces.readable_header(grants)
        except TokenRejected as error:
            self._metrics.token_refusals.labels("rejected_by_keycloak").inc()
            return replace(self._unauthenticated("invalid_token", f"Keycloak rejected the token: {error}"), **who)
        except KeycloakUnavailable as error:
            log.error("no decision for %s on %s: %s", identity.username, wanted, error)
            return Verdict(503, outcome="unavailable", reason="Keycloak unavailable", **who)
        if not allowed:
            lacking = wanted if workspace is None else workspaces.describe(route, permission)
            log.info("denied %s %s", identity.username, lacking)
            return replace(self._forbidden("denied", f"user {identity.username} lacks permission {lacking}"), **who)
        headers = {
            "X-Auth-Request-User": _header_value(identity.username),
            "X-Auth-Request-Email": _header_value(identity.email or ""),
            "X-Auth-Request-Roles": _header_value(",".join(sorted(identity.roles))),
        }
        if workspace is not None:
            headers[workspaces.RESPONSE_HEADER] = workspace
        if listing:
            headers[workspaces.READABLE_HEADER] = readable
        return Verdict(200, headers, outcome="allowed", reason="granted by Keycloak", **who)

    def _unauthenticated(self, error: str | None, description: str) -> Verdict:
        challenge = f'Bearer realm="{self._realm}"'
        if error is not None:
            challenge += f', error="{error}", error_description="{_reason(description)}"'
        return Verdict(401, {"WWW-Authenticate": challenge}, outcome="unauthenticated", reason=_reason(description))

    def _throttled(self, retry_after: int) -> Verdict:
        """NGINX turns any auth status but 2xx/401/403 into 500, so the 429 travels as a header."""
        reason = f"too many failed sign-in attempts; retry after {retry_after} seconds"
        return Verdict(
            403,
            {"X-Gate-Status": "429", "Retry-After": str(retry_after), "X-Gate-Reason": reason},
            outcome="throttled",
            reason=reason,
        )

    def _forbidden(self, outcome: str, reason: str) -> Verdict:
        return Verdict(403, {"X-Gate-Reason": _reason(reason)}, outcome=outcome, reason=_reason(reason))


def _reason(text: str) -> str:
    """NGINX embeds the reason in a JSON body and a quoted header parameter; keep it inert."""
    return _UNSAFE_REASON.sub("_", text)[:200]


def _header_value(value: str) -> str:
    return value if value.isascii() and value.isprintable() else quote(value, safe="@.+-_")
