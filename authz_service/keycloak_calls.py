"""Every call from the gate to Keycloak: bounded concurrency, one deadline, measured by endpoint.

A slow or hung Keycloak must not pile up connections or keep NGINX waiting until its own timeout:
at most `concurrency` calls are in flight, and a call (waiting for a slot included) gives up after
`deadline` seconds with an httpx.TimeoutException, which the callers turn into 503. The per-endpoint
latency histogram and error counter are recorded here, in one place, for all callers.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from .metrics import Metrics

# A request extension naming the endpoint for metrics when the URL alone does not (readiness).
ENDPOINT_EXTENSION = "gate_endpoint"


def endpoint_of(request: httpx.Request) -> str:
    named = request.extensions.get(ENDPOINT_EXTENSION)
    if isinstance(named, str):
        return named
    path = request.url.path
    if path.endswith("/protocol/openid-connect/certs"):
        return "jwks"
    if path.endswith("/protocol/openid-connect/token"):
        return "uma" if b"uma-ticket" in request.content else "token"
    if "/events" in path:
        return "events"
    return "other"


class KeycloakTransport(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport, metrics: Metrics, concurrency: int, deadline: float) -> None:
        self._inner = inner
        self._metrics = metrics
        self._slots = asyncio.Semaphore(concurrency)
        self._deadline = deadline

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        endpoint = endpoint_of(request)
        started = time.perf_counter()
        waiting = True
        try:
            async with asyncio.timeout(self._deadline):
                async with self._slots:
                    waiting = False
                    response = await self._inner.handle_async_request(request)
                    # Read the (small) body inside the deadline and the slot.
                    await response.aread()
        except TimeoutError:
            kind = "busy" if waiting else "timeout"
            self._metrics.keycloak_errors.labels(endpoint, kind).inc()
            raise httpx.TimeoutException(
                f"no answer from Keycloak ({endpoint}) within {self._deadline:g} s"
                + (" (all connections busy)" if waiting else ""),
                request=request,
            ) from None
        except httpx.TimeoutException:
            self._metrics.keycloak_errors.labels(endpoint, "timeout").inc()
            raise
        except httpx.HTTPError:
            self._metrics.keycloak_errors.labels(endpoint, "network").inc()
            raise
        finally:
            self._metrics.keycloak_seconds.labels(endpoint).observe(time.perf_counter() - started)
        if response.status_code >= 500:
            self._metrics.keycloak_errors.labels(endpoint, "status_5xx").inc()
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()
