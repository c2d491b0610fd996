"""Revocation: which Keycloak events void cached decisions, and when cached decisions stop counting."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from authz_service.app import create_app
from authz_service.cache import DecisionCache
from authz_service.decisions import Authorizer
from authz_service.health import Readiness
from authz_service.metrics import Metrics
from authz_service.revocation import (
    ALWAYS,
    CLOCK_MARGIN_SECONDS,
    PAGE_SIZE,
    EventsUnavailable,
    NotBefore,
    Revocation,
    RightsChange,
    admin_change,
    user_change,
)
from authz_service.routes import Permission
from authz_service.settings import Settings
from authz_service.tokens import Identity
from authz_service.uma import UmaClient

from .fake_clock import Clock
from .test_app import TOKEN_URL, FakeKeycloak
from .token_factory import JWKS_URL, Realm

BOB_ID = "6f1c2d4e-0000-4000-8000-00000000b0b0"
ALICE_ID = "6f1c2d4e-0000-4000-8000-0000000a11ce"
DELETE = Permission("experiments", "delete")


def admin_event(path: str, resource_type: str, operation: str = "UPDATE", at: float = 1_000.0) -> dict[str, Any]:
    return {"time": int(at * 1000), "resourcePath": path, "resourceType": resource_type, "operationType": operation}


class FakeEvents:
    """Keycloak's two event lists, newest first, filtered by `dateFrom` and paged like the real API."""

    def __init__(self) -> None:
        self.admin: list[dict[str, Any]] = []
        self.user: list[dict[str, Any]] = []
        self.down = False
        self.reads: list[tuple[str, int, int]] = []

    async def admin_events(self, since_ms: int, first: int, limit: int) -> list[dict[str, Any]]:
        return self._page("admin", self.admin, since_ms, first, limit)

    async def user_events(self, since_ms: int, first: int, limit: int) -> list[dict[str, Any]]:
        return self._page("user", self.user, since_ms, first, limit)

    async def close(self) -> None:
        pass

    def _page(self, kind: str, events: list[dict[str, Any]], since_ms: int, first: int, limit: int) -> list[dict[str, Any]]:
        if self.down:
            raise EventsUnavailable("connection refused")
        self.reads.append((kind, since_ms, first))
        matching = sorted((event for event in events if event["time"] >= since_ms), key=lambda e: -e["time"])
        return matching[first : first + limit]


def revocation(clock: Clock, events: FakeEvents | None, metrics: Metrics | None = None) -> Revocation:
    return Revocation(events, poll_interval=2, max_delay=10, lookback=65, metrics=metrics or Metrics(), clock=clock)


def counted(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(f"{name}_total", labels) or 0.0


def poll(subject: Revocation) -> None:
    asyncio.run(subject.poll())


@pytest.mark.parametrize(
    ("path", "resource_type", "operation"),
    [
        (f"users/{BOB_ID}/role-mappings/realm", "REALM_ROLE_MAPPING", "DELETE"),
        (f"users/{BOB_ID}/role-mappings/clients/3f2a", "CLIENT_ROLE_MAPPING", "CREATE"),
        (f"users/{BOB_ID}/groups/9c1e", "GROUP_MEMBERSHIP", "DELETE"),
        (f"users/{BOB_ID}/groups/9c1e", "GROUP_MEMBERSHIP", "CREATE"),
        (f"users/{BOB_ID}", "USER", "UPDATE"),
        (f"users/{BOB_ID}", "USER", "DELETE"),
        (f"users/{BOB_ID}/logout", "USER", "ACTION"),
    ],
)
def test_changes_under_a_user_concern_that_user(path: str, resource_type: str, operation: str) -> None:
    margin = 0.0 if operation == "CREATE" else CLOCK_MARGIN_SECONDS
    assert admin_change(admin_event(path, resource_type, operation, at=1_234.5)) == RightsChange(BOB_ID, 1_234.5 + margin)


@pytest.mark.parametrize(
    ("path", "resource_type", "operation"),
    [
        ("roles-by-id/77aa", "REALM_ROLE", "UPDATE"),
        ("roles/Admin/composites", "REALM_ROLE", "CREATE"),
        ("groups/9c1e/role-mappings/realm", "REALM_ROLE_MAPPING", "CREATE"),
        ("groups/9c1e", "GROUP", "DELETE"),
        ("clients/3f2a/authz/resource-server/policy/role/51b0", "AUTHORIZATION_POLICY", "UPDATE"),
        ("clients/3f2a/roles/viewer", "CLIENT_ROLE", "DELETE"),
        ("clients/3f2a", "CLIENT", "UPDATE"),
        ("sessions/0d6a", "USER_SESSION", "DELETE"),
        ("push-revocation", "REALM", "ACTION"),
    ],
)
def test_changes_to_shared_definitions_concern_everyone(path: str, resource_type: str, operation: str) -> None:
    margin = 0.0 if operation == "CREATE" else CLOCK_MARGIN_SECONDS
    assert admin_change(admin_event(path, resource_type, operation)) == RightsChange(None, 1_000.0 + margin)


@pytest.mark.parametrize(
    ("path", "resource_type", "operation"),
    [
        ("clients/3f2a", "CLIENT", "CREATE"),
        ("authentication/flows/browser/executions", "AUTH_EXECUTION", "UPDATE"),
        (f"attack-detection/brute-force/users/{BOB_ID}", "USER_LOGIN_FAILURE", "DELETE"),
    ],
)
def test_changes_that_grant_or_take_nothing_are_ignored(path: str, resource_type: str, operation: str) -> None:
    assert admin_change(admin_event(path, resource_type, operation)) is None


def test_only_user_events_that_end_access_count() -> None:
    logout = {"time": 5_000, "type": "LOGOUT", "userId": BOB_ID}
    assert user_change(logout) == RightsChange(BOB_ID, 5.0 + CLOCK_MARGIN_SECONDS)
    assert user_change({**logout, "type": "LOGIN"}) is None
    assert user_change({**logout, "userId": None}) is None


def test_a_users_change_voids_only_that_users_older_decisions() -> None:
    clock = Clock(10_000.0)
    events = FakeEvents()
    subject = revocation(clock, events)
    poll(subject)
    assert subject.not_before(BOB_ID) == ALWAYS
    events.admin.append(admin_event(f"users/{BOB_ID}/role-mappings/realm", "REALM_ROLE_MAPPING", "DELETE", at=10_000.4))
    clock.now += 2
    poll(subject)
    void = 10_000.4 + CLOCK_MARGIN_SECONDS
    assert subject.not_before(BOB_ID) == NotBefore(void, void)
    assert subject.not_before(ALICE_ID) == ALWAYS


def test_a_realm_wide_change_voids_everyones_older_decisions() -> None:
    clock = Clock(10_000.0)
    events = FakeEvents()
    subject = revocation(clock, events)
    events.admin.append(admin_event("roles-by-id/77aa", "REALM_ROLE", at=9_998.0))
    poll(subject)
    void = 9_998.0 + CLOCK_MARGIN_SECONDS
    assert subject.not_before(ALICE_ID) == subject.not_before(BOB_ID) == NotBefore(void, void)


def test_decisions_this_process_made_after_reading_a_change_are_kept_even_within_the_margin() -> None:
    """Read 0.5 s after the sign-out: this process's later decisions hold; shared ones need the margin."""
    clock = Clock(10_000.0)
    events = FakeEvents()
    subject = revocation(clock, events)
    events.user.append({"time": 9_999_500, "type": "LOGOUT", "userId": BOB_ID})
    poll(subject)
    assert subject.not_before(BOB_ID) == NotBefore(own=10_000.0, shared=9_999.5 + CLOCK_MARGIN_SECONDS)


def test_first_poll_reads_back_as_far_as_any_cached_decision_and_later_polls_only_the_recent_past() -> None:
    clock = Clock(10_000.0)
    events = FakeEvents()
    subject = revocation(clock, events)
    events.admin.append(admin_event(f"users/{BOB_ID}", "USER", at=9_940.0))
    events.admin.append(admin_event(f"users/{ALICE_ID}", "USER", at=9_930.0))
    poll(subject)
    assert events.reads[0] == ("admin", 9_935_000, 0)
    assert subject.not_before(BOB_ID).own == 9_940.0 + CLOCK_MARGIN_SECONDS
    assert subject.not_before(ALICE_ID) == ALWAYS
    clock.now += 2
    poll(subject)
    assert events.reads[-2] == ("admin", 9_935_000, 0)


def test_an_event_read_twice_changes_nothing() -> None:
    clock = Clock(10_000.0)
    events = FakeEvents()
    metrics = Metrics()
    subject = revocation(clock, events, metrics)
    events.admin.append(admin_event(f"users/{BOB_ID}", "USER", at=9_999.0))
    poll(subject)
    first = subject.not_before(BOB_ID)
    clock.now += 2
    poll(subject)
    assert subject.not_before(BOB_ID) == first
    assert counted(metrics, "gate_revocation_changes", scope="user") == 1


def test_every_page_is_read() -> None:
    clock = Clock(10_000.0)
    events = FakeEvents()
    subject = revocation(clock, events)
    events.admin += [admin_event(f"users/user-{n}", "USER", at=9_990.0 + n / 1000) for n in range(PAGE_SIZE + 5)]
    events.admin.append(admin_event(f"users/{BOB_ID}", "USER", at=9_980.0))
    poll(subject)
    assert [first for kind, _, first in events.reads if kind == "admin"] == [0, PAGE_SIZE]
    assert subject.not_before(BOB_ID).own == 9_980.0 + CLOCK_MARGIN_SECONDS


def test_a_flood_of_events_voids_everything() -> None:
    clock = Clock(10_000.0)
    events = FakeEvents()
    subject = revocation(clock, events)
    events.admin += [admin_event(f"users/user-{n}", "USER", at=9_990.0) for n in range(PAGE_SIZE * 30)]
    poll(subject)
    assert subject.not_before(ALICE_ID) == NotBefore(10_000.0, 10_000.0 + CLOCK_MARGIN_SECONDS)


def test_without_events_only_decisions_younger_than_the_budget_count() -> None:
    clock = Clock(10_000.0)
    events = FakeEvents()
    metrics = Metrics()
    subject = revocation(clock, events, metrics)
    assert subject.not_before(BOB_ID) == NotBefore(9_990.0, 9_990.0), "before the first poll nothing is known"
    assert not subject.healthy
    poll(subject)
    assert subject.healthy and subject.last_success == 10_000.0
    events.down = True
    clock.now += 10
    poll(subject)
    assert subject.healthy and subject.not_before(BOB_ID) == ALWAYS
    clock.now += 0.5
    poll(subject)
    state = subject.state()
    assert not state.healthy and state.consecutive_failures == 2 and state.last_error == "connection refused"
    assert subject.not_before(BOB_ID) == NotBefore(clock.now - 10, clock.now - 10)
    events.down = False
    poll(subject)
    assert subject.healthy and subject.not_before(BOB_ID) == ALWAYS
    assert subject.state().consecutive_failures == 0
    assert counted(metrics, "gate_revocation_polls", result="failed") == 2
    assert counted(metrics, "gate_revocation_polls", result="ok") == 2


def test_old_change_times_are_forgotten_once_no_cache_can_hold_older_decisions() -> None:
    clock = Clock(10_000.0)
    events = FakeEvents()
    subject = revocation(clock, events)
    events.admin.append(admin_event(f"users/{BOB_ID}", "USER", at=9_999.0))
    poll(subject)
    clock.now += 70
    poll(subject)
    assert subject.not_before(BOB_ID) == ALWAYS


def test_off_means_no_polling_and_nothing_voided() -> None:
    clock = Clock(10_000.0)
    metrics = Metrics()
    subject = revocation(clock, None, metrics)
    poll(subject)
    assert not subject.enabled and subject.healthy
    assert counted(metrics, "gate_revocation_polls", result="ok") == 0
    assert subject.not_before(BOB_ID) == ALWAYS


class GrantTable:
    """UMA decisions from a mutable table, like Keycloak's role policies reading current roles."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.granted = {"bob-token": True}
        self.calls = 0
        self.change_during_call: float | None = None

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        answer = self.granted["bob-token"]
        if self.change_during_call is not None:
            self.clock.now += self.change_during_call
        return httpx.Response(200, json={"result": answer})


def authorizer_with(clock: Clock, events: FakeEvents) -> tuple[Authorizer, GrantTable, Revocation]:
    keycloak = GrantTable(clock)
    uma = UmaClient(httpx.AsyncClient(transport=httpx.MockTransport(keycloak.handle)), "http://kc.test/token", "mlflow-gate")
    subject = revocation(clock, events)
    authorizer = Authorizer(DecisionCache(max_ttl=60, size=100, clock=clock), uma, subject, clock=clock)
    return authorizer, keycloak, subject


BOB = Identity(BOB_ID, "bob", None, frozenset({"Admin"}), "mlflow-cli", 20_000.0, "bob-token")


def test_a_cached_allow_is_asked_again_after_the_users_revocation() -> None:
    clock = Clock(10_000.0)
    events = FakeEvents()
    authorizer, keycloak, subject = authorizer_with(clock, events)
    poll(subject)
    assert asyncio.run(authorizer.is_allowed(BOB, DELETE)) is True
    clock.now += 1
    assert asyncio.run(authorizer.is_allowed(BOB, DELETE)) is True
    assert keycloak.calls == 1
    keycloak.granted["bob-token"] = False
    events.admin.append(admin_event(f"users/{BOB_ID}/role-mappings/realm", "REALM_ROLE_MAPPING", "DELETE", at=clock.now))
    assert asyncio.run(authorizer.is_allowed(BOB, DELETE)) is True, "not yet polled: still the cached answer"
    clock.now += 2
    poll(subject)
    assert asyncio.run(authorizer.is_allowed(BOB, DELETE)) is False
    assert asyncio.run(authorizer.is_allowed(BOB, DELETE)) is False
    assert keycloak.calls == 2


def test_an_answer_asked_before_a_change_is_not_trusted_even_if_it_arrives_after() -> None:
    clock = Clock(10_000.0)
    events = FakeEvents()
    authorizer, keycloak, subject = authorizer_with(clock, events)
    poll(subject)
    keycloak.change_during_call = 3.0
    events.admin.append(admin_event(f"users/{BOB_ID}", "USER", at=clock.now + 0.5))
    assert asyncio.run(authorizer.is_allowed(BOB, DELETE)) is True
    keycloak.change_during_call = None
    poll(subject)
    keycloak.granted["bob-token"] = False
    assert asyncio.run(authorizer.is_allowed(BOB, DELETE)) is False
    assert keycloak.calls == 2


def test_the_gate_polls_while_it_runs_and_a_revocation_turns_its_cached_allow_into_403() -> None:
    """The whole process: FastAPI lifespan starts the poller; Keycloak's answer changes with the event."""
    realm = Realm()
    keycloak = FakeKeycloak(realm)
    revoked = False

    def handle(request: httpx.Request) -> httpx.Response:
        if revoked and request.url == TOKEN_URL:
            keycloak.uma_requests += 1
            return httpx.Response(403, json={"error": "access_denied"})
        return keycloak.handle(request)

    events = FakeEvents()
    settings = Settings.from_env(
        {"GATE_KEYCLOAK_URL": "http://keycloak.test", "GATE_CLIENT_SECRET": "test-secret", "GATE_REVOCATION_POLL": "0.05"}
    )
    app = create_app(settings, transport=httpx.MockTransport(handle), events=events)
    token = realm.token(sub=BOB_ID)
    headers = {"X-Original-Method": "GET", "X-Original-URI": "/api/2.0/mlflow/experiments/get?experiment_id=1"}
    headers["Authorization"] = f"Bearer {token}"
    with TestClient(app) as client:
        deadline = time.monotonic() + 5
        while not app.state.components.revocation.healthy and time.monotonic() < deadline:
            time.sleep(0.02)
        assert client.get("/_gate/check", headers=headers).status_code == 200
        revoked = True
        time.sleep(0.3)
        assert client.get("/_gate/check", headers=headers).status_code == 200, "no event yet: the cached allow holds"
        assert keycloak.uma_requests == 1
        events.admin.append(admin_event(f"users/{BOB_ID}/role-mappings/realm", "REALM_ROLE_MAPPING", "DELETE", at=time.time()))
        statuses = []
        while time.monotonic() < deadline and 403 not in statuses:
            statuses.append(client.get("/_gate/check", headers=headers).status_code)
            time.sleep(0.02)
        assert statuses[-1] == 403
        metrics = client.get("/_gate/metrics").text
        ready = client.get("/_gate/ready").json()
    assert 'gate_revocation_changes_total{scope="user"} 1.0' in metrics
    assert ready["dependencies"]["keycloak_events"]["state"] == "up"
    assert any(kind == "admin" for kind, _, _ in events.reads)


def test_readiness_degrades_while_the_events_cannot_be_read() -> None:
    clock = Clock(10_000.0)
    events = FakeEvents()
    subject = revocation(clock, events)
    keycloak = FakeKeycloak(Realm())
    http = httpx.AsyncClient(transport=httpx.MockTransport(keycloak.handle))
    ready = Readiness(http, JWKS_URL, TOKEN_URL, None, subject, clock=clock)
    poll(subject)
    status, body = asyncio.run(ready.report())
    assert (status, body["status"]) == (200, "ok")
    assert body["dependencies"]["keycloak_events"] == {"state": "up", "last_read": 10_000.0}
    events.down = True
    clock.now += 11
    poll(subject)
    status, body = asyncio.run(ready.report())
    assert (status, body["status"]) == (200, "degraded")
    assert body["dependencies"]["keycloak_events"]["state"] == "down"
    assert body["dependencies"]["keycloak_events"]["error"] == "connection refused"
    assert "GATE_REVOCATION_MAX_DELAY" in body["detail"]


def test_after_reading_a_change_each_question_is_asked_once_not_on_every_request() -> None:
    clock = Clock(10_000.0)
    events = FakeEvents()
    authorizer, keycloak, subject = authorizer_with(clock, events)
    events.admin.append(admin_event("roles-by-id/77aa", "REALM_ROLE", at=clock.now - 0.2))
    poll(subject)
    for _ in range(20):
        assert asyncio.run(authorizer.is_allowed(BOB, DELETE)) is True
        clock.now += 0.01
    assert keycloak.calls == 1


def test_a_user_created_a_moment_ago_costs_one_decision() -> None:
    """Creations add rights: no margin, so a decision right after them is not asked twice."""
    clock = Clock(10_000.0)
    events = FakeEvents()
    authorizer, keycloak, subject = authorizer_with(clock, events)
    poll(subject)
    events.admin.append(admin_event(f"users/{BOB_ID}", "USER", "CREATE", at=clock.now - 0.3))
    events.admin.append(admin_event(f"users/{BOB_ID}/role-mappings/realm", "REALM_ROLE_MAPPING", "CREATE", at=clock.now - 0.2))
    assert asyncio.run(authorizer.is_allowed(BOB, DELETE)) is True
    clock.now += 0.5
    poll(subject)
    assert asyncio.run(authorizer.is_allowed(BOB, DELETE)) is True
    assert keycloak.calls == 1


def test_a_slow_poll_shortens_the_pause_after_it() -> None:
    clock = Clock(10_000.0)
    pauses: list[float] = []

    class SlowEvents(FakeEvents):
        async def admin_events(self, since_ms: int, first: int, limit: int) -> list[dict[str, Any]]:
            clock.now += 1.5
            return await super().admin_events(since_ms, first, limit)

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 2:
            raise asyncio.CancelledError

    subject = Revocation(SlowEvents(), poll_interval=2, max_delay=10, lookback=65, metrics=Metrics(), clock=clock, sleep=sleep)
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(subject.run())
    assert pauses == [0.5, 0.5]
