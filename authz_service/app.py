"""FastAPI wiring: builds the components from Settings and exposes the gate's endpoints.

Only NGINX talks to this service. The check endpoint must never be published to clients: it trusts
the X-Original-* headers that NGINX sets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from redis.asyncio import Redis
from redis.exceptions import RedisError

from . import audit, workspaces
from .basic import BasicExchange, KeyedDigests
from .cache import DecisionCache
from .check_route import CheckEndpoint, GateApp
from .checks import Checker
from .credentials import BasicLogin, CredentialSources
from .decisions import Authorizer
from .health import Readiness
from .keycloak_calls import KeycloakTransport
from .metrics import CONTENT_TYPE, Metrics
from .oidc import OidcClient
from .origin import public_origin
from .redis_breaker import Breaker, GuardedRedis
from .revocation import EventsSource, KeycloakEvents, Revocation
from .routes import RouteMap
from .sessions import KeyValue, SessionStore
from .settings import Settings, configure_logging
from .signin import SignIn
from .throttle import FailureThrottle
from .tokens import SigningKeys, TokenValidator
from .uma import UmaClient

log = logging.getLogger(__name__)


@dataclass
class Components:
    """Everything with state, built once per process; tests inject transports instead of patching."""

    http: httpx.AsyncClient
    redis: Redis | None
    keys: SigningKeys
    uma: UmaClient
    revocation: Revocation
    authorizer: Authorizer
    checker: Checker
    metrics: Metrics
    sessions: SessionStore | None
    signin: SignIn | None
    readiness: Readiness
    audit: audit.AuditLog
    credentials: CredentialSources
    mlflow: httpx.AsyncClient
    """Only for the workspace listing; kept apart from the Keycloak client and its limits."""

    @classmethod
    def build(
        cls,
        settings: Settings,
        routes: RouteMap,
        transport: httpx.AsyncBaseTransport | None = None,
        redis: Redis | None = None,
        events: EventsSource | None = None,
    ) -> Components:
        """`events` replaces Keycloak's event API (tests); by default it is read when revocation is on."""
        metrics = Metrics(str(settings.metrics_dir) if settings.metrics_dir else None)
        raw_transport = transport
        if transport is None:
            transport = httpx.AsyncHTTPTransport(
                verify=str(settings.keycloak_ca_file) if settings.keycloak_ca_file else True,
                limits=httpx.Limits(
                    max_connections=settings.keycloak_concurrency,
                    max_keepalive_connections=settings.keycloak_concurrency,
                ),
            )
        http = httpx.AsyncClient(
            timeout=settings.keycloak_timeout,
            transport=KeycloakTransport(
                transport, metrics, settings.keycloak_concurrency, settings.keycloak_timeout
            ),
        )
        if redis is None and settings.redis_url is not None:
            breaker = Breaker(settings.redis_retry_interval, metrics.redis_breaker_trips.inc)
            redis = GuardedRedis.connect(settings.redis_url, settings.redis_timeout, breaker)
        keys = SigningKeys(http, settings.jwks_url, settings.jwks_min_refresh_interval)
        uma = UmaClient(http, settings.token_url, settings.client_id)
        cache = DecisionCache(settings.cache_max_ttl, settings.cache_size, redis)
        if events is None and settings.revocation_enabled:
            events = KeycloakEvents(
                settings.keycloak_url,
                settings.realm,
                settings.client_id,
                str(settings.client_secret),
                str(settings.keycloak_ca_file) if settings.keycloak_ca_file else True,
                settings.keycloak_timeout,
                metrics,
            )
        revocation = Revocation(
            events,
            settings.revocation_poll,
            settings.revocation_max_delay,
            # The oldest decision a cache may hold: its lifetime plus the Keycloak call it waited for.
            lookback=settings.cache_max_ttl + settings.keycloak_timeout,
            metrics=metrics,
        )
        authorizer = Authorizer(cache, uma, revocation)
        tokens = TokenValidator(keys, settings.issuer, settings.audience)
        checker = Checker(settings.realm, routes, tokens, authorizer, metrics, settings.workspaces)
        sessions = signin = None
        if settings.sso_enabled:
            oidc = OidcClient(http, settings)
            sessions = SessionStore(KeyValue(redis), oidc, settings.session_lifetime, metrics=metrics)
            signin = SignIn(settings, oidc, sessions, tokens, metrics)
        readiness = Readiness(http, settings.jwks_url, settings.token_url, redis, revocation)
        credentials = CredentialSources(
            sessions,
            _basic_login(settings, http, redis, metrics),
            public_origin(settings.public_url) if settings.public_url else None,
        )
        mlflow = httpx.AsyncClient(timeout=settings.keycloak_timeout, transport=raw_transport)
        return cls(
            http, redis, keys, uma, revocation, authorizer, checker, metrics, sessions, signin, readiness,
            audit.AuditLog(settings.audit_log), credentials, mlflow,
        )

    async def close(self) -> None:
        await self.revocation.close()
        await self.http.aclose()
        await self.mlflow.aclose()
        if self.redis is not None:
            await self.redis.aclose()


def create_app_from_env() -> FastAPI:
    """The factory each uvicorn worker calls (GATE_WORKERS > 1); the parent validated the settings."""
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    return create_app(settings)


def create_app(
    settings: Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    redis: Redis | None = None,
    events: EventsSource | None = None,
) -> FastAPI:
    routes = RouteMap.load(settings.route_map_extra)
    components = Components.build(settings, routes, transport, redis, events)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if components.revocation.enabled:
            poller = asyncio.create_task(components.revocation.run(), name="revocation-poller")
        else:
            log.warning("revocation polling is off: a rights change waits for cached decisions to expire")
            poller = None
        yield
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
        await components.close()

    check = CheckEndpoint(
        components.checker, components.credentials, components.signin is not None, components.metrics, components.audit
    )
    app = GateApp(check, title="MLflow gate", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.components = components

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
            upstream = await components.mlflow.get(settings.mlflow_url + uri)
            body = upstream.json()
        except (httpx.HTTPError, ValueError) as error:
            log.error("workspace listing: MLflow did not answer: %s", error)
            return Response(status_code=503)
        if upstream.status_code != 200:
            return JSONResponse(body, status_code=upstream.status_code)
        return JSONResponse(workspaces.filter_listing(body, readable))

    if components.signin is not None:
        app.include_router(components.signin.router())

    @app.exception_handler(RedisError)
    async def session_store_unavailable(_request: Request, error: RedisError) -> Response:
        """Sign-in and sign-out keep their state in Redis; without it they fail with a clear 503."""
        log.error("session store unavailable: %s", error)
        return PlainTextResponse(
            "Sign-in is unavailable right now (session store unreachable). Retry shortly.\n",
            status_code=503,
            headers={"Retry-After": "5", "Cache-Control": "no-store"},
        )

    @app.get("/_gate/health")
    async def health() -> dict[str, str]:
        """Liveness: the process answers. Never calls a dependency."""
        return {"status": "ok"}

    @app.get("/_gate/ready")
    async def ready() -> JSONResponse:
        status, body = await components.readiness.report()
        return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})

    @app.get("/_gate/metrics")
    async def metrics() -> Response:
        return Response(components.metrics.render(), media_type=CONTENT_TYPE)

    return app


def _basic_login(settings: Settings, http: httpx.AsyncClient, redis: Redis | None, metrics: Metrics) -> BasicLogin | None:
    if not settings.basic_enabled or settings.basic_secret is None:
        return None
    digests = KeyedDigests(settings.basic_secret)
    exchange = BasicExchange(
        http,
        settings.token_url,
        settings.basic_client_id,
        settings.basic_robot_prefix,
        digests,
        redis,
        settings.cache_size,
        counted=lambda result: metrics.basic_exchanges.labels(result).inc(),
    )
    throttle = FailureThrottle(digests, redis, settings.basic_max_failures, settings.basic_failure_window)
    return BasicLogin(exchange, throttle)

