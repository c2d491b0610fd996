"""FastAPI wiring: builds the components from Settings and exposes the gate's endpoints.

Only NGINX talks to this service. The check endpoint must never be published to clients: it trusts
the X-Original-* headers that NGINX sets.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from redis.asyncio import Redis
from redis.exceptions import RedisError

from . import workspaces
from .cache import DecisionCache
from .checks import Checker, CredentialsUnavailable
from .decisions import Authorizer
from .metrics import Metrics
from .oidc import OidcClient
from .routes import RouteMap
from .sessions import KeyValue, SessionStore
from .settings import Settings
from .signin import SESSION_COOKIE, SignIn, signin_location
from .tokens import SigningKeys, TokenValidator
from .uma import KeycloakUnavailable, UmaClient

log = logging.getLogger(__name__)


@dataclass
class Components:
    """Everything with state, built once per process; tests inject transports instead of patching."""

    http: httpx.AsyncClient
    redis: Redis | None
    keys: SigningKeys
    uma: UmaClient
    authorizer: Authorizer
    checker: Checker
    metrics: Metrics
    sessions: SessionStore | None
    signin: SignIn | None

    @classmethod
    def build(
        cls,
        settings: Settings,
        routes: RouteMap,
        transport: httpx.AsyncBaseTransport | None = None,
        redis: Redis | None = None,
    ) -> Components:
        http = httpx.AsyncClient(
            timeout=settings.keycloak_timeout,
            verify=str(settings.keycloak_ca_file) if settings.keycloak_ca_file else True,
            transport=transport,
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        )
        if redis is None and settings.redis_url is not None:
            redis = Redis.from_url(settings.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
        keys = SigningKeys(http, settings.jwks_url, settings.jwks_min_refresh_interval)
        uma = UmaClient(http, settings.token_url, settings.client_id)
        cache = DecisionCache(settings.cache_max_ttl, settings.cache_size, redis)
        authorizer = Authorizer(cache, uma)
        metrics = Metrics()
        tokens = TokenValidator(keys, settings.issuer, settings.audience)
        checker = Checker(settings.realm, routes, tokens, authorizer, metrics, settings.workspaces)
        sessions = signin = None
        if settings.sso_enabled:
            oidc = OidcClient(http, settings)
            sessions = SessionStore(KeyValue(redis), oidc, settings.session_lifetime)
            signin = SignIn(settings, oidc, sessions, tokens)
        return cls(http, redis, keys, uma, authorizer, checker, metrics, sessions, signin)

    async def close(self) -> None:
        await self.http.aclose()
        if self.redis is not None:
            await self.redis.aclose()


def create_app(
    settings: Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    redis: Redis | None = None,
) -> FastAPI:
    routes = RouteMap.load(settings.route_map_extra)
    components = Components.build(settings, routes, transport, redis)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await components.close()

    app = FastAPI(title="MLflow gate", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.components = components

    @app.get("/_gate/check")
    async def check(request: Request) -> Response:
        method = request.headers.get("x-original-method", "")
        uri = request.headers.get("x-original-uri", "")

        async def credentials() -> str | None:
            token = bearer_token(request.headers.get("authorization"))
            session_id = request.cookies.get(SESSION_COOKIE)
            if token is not None or not session_id or components.sessions is None:
                return token
            try:
                return await components.sessions.access_token(session_id)
            except (RedisError, KeycloakUnavailable) as error:
                raise CredentialsUnavailable(str(error)) from error

        signin = signin_location(uri) if components.signin and is_navigation(method, request) else None
        workspace_headers = request.headers.getlist(workspaces.HEADER)
        verdict = await components.checker.check(method, uri, credentials, signin, workspace_headers)
        return Response(status_code=verdict.status, headers=verdict.headers)

    @app.get("/_gate/workspaces/{target:path}")
    async def workspace_listing(request: Request, target: str) -> Response:
        """MLflow's workspace listing, cut down to what the check said the caller may read.

        NGINX routes an allowed listing here instead of to MLflow, with the check's answer in
        X-Gate-Readable-Workspaces (a header no client can set: NGINX replaces it).
        """
        readable = request.headers.get(workspaces.READABLE_HEADER.lower())
        uri = "/" + target + (f"?{request.url.query}" if request.url.query else "")
        if readable is None or settings.mlflow_url is None or not workspaces.is_listing("GET", uri):
            return Response(status_code=403)
        try:
            upstream = await components.http.get(settings.mlflow_url + uri)
            body = upstream.json()
        except (httpx.HTTPError, ValueError) as error:
            log.error("workspace listing: MLflow did not answer: %s", error)
            return Response(status_code=503)
        if upstream.status_code != 200:
            return JSONResponse(body, status_code=upstream.status_code)
        return JSONResponse(workspaces.filter_listing(body, readable))

    if components.signin is not None:
        app.include_router(components.signin.router())

    @app.get("/_gate/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/_gate/metrics", response_class=PlainTextResponse)
    async def metrics() -> str:
        return components.metrics.render(
            {
                "gate_decision_cache_hits_total": components.authorizer.cache_hits,
                "gate_uma_requests_total": components.uma.request_count,
                "gate_jwks_fetches_total": components.keys.fetch_count,
                "gate_session_refreshes_total": components.sessions.refresh_count if components.sessions else 0,
            }
        )

    return app


def is_navigation(method: str, request: Request) -> bool:
    """A browser loading a page (sent to sign-in), as opposed to a script or API client (gets 401)."""
    if method not in ("GET", "HEAD"):
        return False
    mode = request.headers.get("sec-fetch-mode")
    if mode is not None:
        return mode == "navigate"
    return "text/html" in request.headers.get("accept", "")


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer` header; other schemes count as no credentials."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token
