"""Prometheus metrics of the gate, on prometheus-client.

Each `Metrics` owns its registry, so several apps in one test process never collide. With several
worker processes, prometheus-client's multiprocess mode is used (PROMETHEUS_MULTIPROC_DIR, set up by
`python -m authz_service`): every worker writes its samples to files there and any worker's
/_gate/metrics sums them, so a scrape counts every process, whichever one answers it.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds; a warm check takes about a millisecond, a Keycloak call tens of milliseconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self, multiprocess_dir: str | None = None) -> None:
        self._multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry()
        self.checks = Counter(
            "gate_checks",
            "Auth subrequests answered, by outcome (allowed, denied, unauthenticated, unmapped, unavailable, public, cross_site, throttled).",
            ["outcome"],
            registry=self.registry,
        )
        self.permission_checks = Counter(
            "gate_permission_checks",
            "Decisions on a mapped route, by resource#scope and outcome.",
            ["permission", "outcome"],
            registry=self.registry,
        )
        self.check_seconds = Histogram(
            "gate_check_seconds",
            "Time to answer an auth subrequest.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.cache_lookups = Counter(
            "gate_decision_cache_lookups",
            "Decision-cache lookups, by the layer that answered (memory, redis) or miss.",
            ["layer"],
            registry=self.registry,
        )
        self.keycloak_seconds = Histogram(
            "gate_keycloak_request_seconds",
            "Keycloak calls by endpoint (uma, jwks, token, events, ready), including failed ones.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.keycloak_errors = Counter(
            "gate_keycloak_errors",
            "Keycloak calls without a usable answer, by endpoint and kind (timeout, network, busy, status_5xx).",
            ["endpoint", "kind"],
            registry=self.registry,
        )
        self.token_refusals = Counter(
            "gate_token_refusals",
            "Presented tokens refused with 401, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.signins = Counter(
            "gate_signins", "Browser sign-ins finished, by result.", ["result"], registry=self.registry
        )
        self.session_refreshes = Counter(
            "gate_session_refreshes", "Browser session access tokens refreshed.", registry=self.registry
        )
        self.basic_exchanges = Counter(
            "gate_basic_exchanges",
            "Basic credentials exchanged for a token, by result.",
            ["result"],
            registry=self.registry,
        )
        self.revocation_polls = Counter(
            "gate_revocation_polls",
            "Reads of Keycloak's admin and user events for rights changes, by result (ok, failed).",
            ["result"],
            registry=self.registry,
        )
        self.revocation_changes = Counter(
            "gate_revocation_changes",
            "Rights changes learnt from Keycloak's events, by scope (user, realm).",
            ["scope"],
            registry=self.registry,
        )
        self.redis_breaker_trips = Counter(
            "gate_redis_breaker_trips",
            "Times Redis stopped answering and the gate stopped asking it until it answers a probe again.",
            registry=self.registry,
        )

    def render(self) -> bytes:
        """Prometheus text exposition of this process, or of every worker in multiprocess mode."""
        if self._multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self._multiprocess_dir)
        return generate_latest(registry)
