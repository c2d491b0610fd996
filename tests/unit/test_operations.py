"""Readiness, metrics, the audit line, the Redis breaker and the Keycloak call limits, with fakes."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from redis.exceptions import ConnectionError as RedisConnectionError

from authz_service.__main__ import prepare_multiprocess_dir
from authz_service.app import create_app
from authz_service.audit import AuditLog, timestamp
from authz_service.audit import Request as AuditRequest
from authz_service.checks import Verdict
from authz_service.health import Readiness
from authz_service.keycloak_calls import KeycloakTransport, endpoint_of
from authz_service.metrics import Metrics
from authz_service.redis_breaker import Breaker, GuardedRedis, RedisUnavailable
from authz_service.settings import Settings, SettingsError

from .test_app import (  # noqa: F401 (client, keycloak and realm are fixtures)
    DELETE_EXPERIMENT,
    BrokenRedis,
    GET_EXPERIMENT,
    JWKS_URL,
    TOKEN_URL,
    FakeKeycloak,
    check,
    client,
    keycloak,
    realm,
    settings,
)
from .token_factory import Realm


def sample(metrics_text: str, name: str, **labels: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(metrics_text)
        for s in family.samples
        if s.name == name and labels.items() <= s.labels.items()
    )


class FakeRedis:
    def __init__(self) -> None:
        self.up = True
        self.pings = 0

    async def ping(self) -> bool:
        self.pings += 1
        if not self.up:
            raise RedisConnectionError("connection refused")
        return True


def readiness(keycloak: FakeKeycloak, redis: FakeRedis | None, clock: list[float]) -> Readiness:
    http = httpx.AsyncClient(transport=httpx.MockTransport(keycloak.handle))
    return Readiness(http, JWKS_URL, TOKEN_URL, redis, clock=lambda: clock[0])  # type: ignore[arg-type]


def test_readiness_names_each_dependency_and_degrades_without_redis(keycloak: FakeKeycloak) -> None:
    clock, redis = [0.0], FakeRedis()
    probe = readiness(keycloak, redis, clock)
    status, body = asyncio.run(probe.report())
    assert (status, body["status"]) == (200, "ok")
    assert {name: dep["state"] for name, dep in body["dependencies"].items()} == {
        "keycloak_jwks": "up",
        "keycloak_token_endpoint": "up",
        "redis": "up",
    }
    redis.up = False
    clock[0] = 1.0
    status, body = asyncio.run(probe.report())
    assert (status, body["status"]) == (200, "degraded")
    assert body["dependencies"]["redis"]["state"] == "down"
    assert "browser sessions are refused" in body["detail"]
    keycloak.up = False
    clock[0] = 2.0
    status, body = asyncio.run(probe.report())
    assert (status, body["status"]) == (503, "unavailable")
    assert body["dependencies"]["keycloak_jwks"]["state"] == "down"


def test_readiness_reuses_its_answer_for_a_second(keycloak: FakeKeycloak) -> None:
    clock, redis = [0.0], FakeRedis()
    probe = readiness(keycloak, redis, clock)
    for moment in (0.0, 0.5, 0.99):
        clock[0] = moment
        asyncio.run(probe.report())
    assert redis.pings == 1
    clock[0] = 1.0
    asyncio.run(probe.report())
    assert redis.pings == 2


def test_ready_endpoint_without_redis_reports_it_not_configured(client: TestClient, keycloak: FakeKeycloak) -> None:
    response = client.get("/_gate/ready")
    assert response.status_code == 200
    assert response.json()["dependencies"]["redis"] == {"state": "not configured"}
    assert client.get("/_gate/health").json() == {"status": "ok"}


def test_audit_lines_and_metrics_for_allowed_denied_unauthenticated_and_unmapped(
    keycloak: FakeKeycloak, realm: Realm, tmp_path: Path
) -> None:
    audit_file = tmp_path / "audit.log"
    app = create_app(settings(GATE_AUDIT_LOG=str(audit_file)), transport=httpx.MockTransport(keycloak.handle))
    client = TestClient(app)
    bob = realm.token(sub="user-bob", preferred_username="bob", azp="mlflow-cli", realm_access={"roles": ["Default"]})
    nginx = {"X-Request-Id": "req-1", "X-Real-IP": "192.0.2.7"}
    assert check(client, GET_EXPERIMENT, bob, **nginx).status_code == 200
    assert check(client, DELETE_EXPERIMENT, bob, **{**nginx, "X-Request-Id": "req-2"}).status_code == 403
    assert check(client, GET_EXPERIMENT, **{**nginx, "X-Request-Id": "req-3"}).status_code == 401
    assert check(client, ("POST", "/api/2.0/mlflow/no-such-route"), bob, **{**nginx, "X-Request-Id": "req-4"}).status_code == 403

    text = audit_file.read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    assert [(line["request_id"], line["verdict"], line["status"]) for line in lines] == [
        ("req-1", "allowed", 200),
        ("req-2", "denied", 403),
        ("req-3", "unauthenticated", 401),
        ("req-4", "unmapped", 403),
    ]
    allowed, denied, unauthenticated, unmapped = lines
    assert allowed["user"] == "bob" and allowed["client"] == "mlflow-cli"
    assert allowed["client_address"] == "192.0.2.7"
    assert allowed["path"] == "/ajax-api/2.0/mlflow/experiments/get"  # no query string
    assert allowed["permission"] == "experiments#read" and allowed["cache"] == "miss"
    assert allowed["latency_s"] >= 0 and allowed["source"] == "gate"
    assert denied["permission"] == "experiments#delete" and "lacks permission" in denied["reason"]
    assert unauthenticated["user"] == "" and unauthenticated["cache"] == ""
    assert "no route rule" in unmapped["reason"] and unmapped["permission"] == ""
    assert bob not in text and bob.split(".")[2] not in text

    metrics = client.get("/_gate/metrics").text
    for outcome in ("allowed", "denied", "unauthenticated", "unmapped"):
        assert sample(metrics, "gate_checks_total", outcome=outcome) == 1, outcome
    assert sample(metrics, "gate_permission_checks_total", permission="experiments#delete", outcome="denied") == 1
    assert sample(metrics, "gate_token_refusals_total", reason="missing") == 1
    assert sample(metrics, "gate_decision_cache_lookups_total", layer="miss") == 2
    assert sample(metrics, "gate_keycloak_request_seconds_count", endpoint="uma") == 2
    assert sample(metrics, "gate_keycloak_request_seconds_count", endpoint="jwks") == 1
    assert sample(metrics, "gate_check_seconds_count") == 4


def test_token_refusals_are_counted_by_reason(client: TestClient, realm: Realm) -> None:
    check(client, GET_EXPERIMENT, realm.token(exp=int(time.time()) - 60))
    check(client, GET_EXPERIMENT, "not-a-jwt")
    metrics = client.get("/_gate/metrics").text
    assert sample(metrics, "gate_token_refusals_total", reason="expired") == 1
    assert sample(metrics, "gate_token_refusals_total", reason="malformed") == 1


def test_worker_processes_are_summed_in_multiprocess_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_999.db").write_bytes(b"stale")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "restored after the test")
    prepare_multiprocess_dir(directory)
    assert not (directory / "counter_999.db").exists()
    worker = (
        f"from authz_service.metrics import Metrics; m = Metrics({str(directory)!r}); "
        "m.checks.labels('allowed').inc(); print(m.render().decode())"
    )
    env = {"PROMETHEUS_MULTIPROC_DIR": str(directory), "PATH": ""}
    outputs = [
        subprocess.run([sys.executable, "-c", worker], env=env, capture_output=True, text=True, check=True).stdout
        for _ in range(2)
    ]
    assert sample(outputs[0], "gate_checks_total", outcome="allowed") == 1
    assert sample(outputs[1], "gate_checks_total", outcome="allowed") == 2


def test_breaker_stops_asking_a_hung_redis_after_one_timeout() -> None:
    async def scenario() -> tuple[float, float, bool]:
        async def never_answer(reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
            await reader.read(-1)

        server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        breaker = Breaker(cooldown=60)
        redis = GuardedRedis.connect(f"redis://127.0.0.1:{port}/0", 0.3, breaker)
        began = time.monotonic()
        first = await asyncio.gather(*(redis.get("k") for _ in range(5)), return_exceptions=True)
        first_seconds = time.monotonic() - began
        assert all(isinstance(error, RedisUnavailable) for error in first), first
        began = time.monotonic()
        later = await asyncio.gather(*(redis.get("k") for _ in range(200)), return_exceptions=True)
        assert all(isinstance(error, RedisUnavailable) for error in later)
        open_after = breaker.is_open
        await redis.aclose()
        server.close()
        return first_seconds, time.monotonic() - began, open_after

    first_seconds, later_seconds, open_after = asyncio.run(scenario())
    assert 0.25 < first_seconds < 1.0  # one timeout, not one per request or per retry
    assert later_seconds < 0.1
    assert open_after


def test_breaker_closes_when_the_background_probe_answers() -> None:
    async def scenario() -> tuple[int, bool, bool]:
        attempts: list[int] = []

        async def probe() -> None:
            attempts.append(1)
            if len(attempts) < 3:
                raise RedisConnectionError("still down")

        trips: list[int] = []
        breaker = Breaker(cooldown=0.01, on_trip=lambda: trips.append(1))
        breaker.trip(RedisConnectionError("down"), probe)
        breaker.trip(RedisConnectionError("down again"), probe)  # already open: no second probe
        opened = breaker.is_open
        for _ in range(100):
            if not breaker.is_open:
                break
            await asyncio.sleep(0.01)
        return len(attempts), opened, breaker.is_open or len(trips) != 1

    attempts, opened, still_open_or_miscounted = asyncio.run(scenario())
    assert opened and not still_open_or_miscounted
    assert attempts == 3


class SlowKeycloak(httpx.AsyncBaseTransport):
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.in_flight = 0
        self.most_in_flight = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.seconds)
            return httpx.Response(200, json={"result": True})
        finally:
            self.in_flight -= 1


def uma_post(http: httpx.AsyncClient) -> Any:
    return http.post(TOKEN_URL, data={"grant_type": "urn:ietf:params:oauth:grant-type:uma-ticket"})


def test_keycloak_calls_are_bounded_in_number_and_time() -> None:
    async def scenario() -> tuple[list[Any], float, SlowKeycloak, Metrics]:
        slow, metrics = SlowKeycloak(0.2), Metrics()
        http = httpx.AsyncClient(transport=KeycloakTransport(slow, metrics, concurrency=2, deadline=0.5))
        began = time.monotonic()
        results = await asyncio.gather(*(uma_post(http) for _ in range(8)), return_exceptions=True)
        return results, time.monotonic() - began, slow, metrics

    results, seconds, slow, metrics = asyncio.run(scenario())
    answered = [r for r in results if isinstance(r, httpx.Response)]
    refused = [r for r in results if isinstance(r, httpx.TimeoutException)]
    assert slow.most_in_flight == 2
    assert len(answered) + len(refused) == 8
    # Eight calls of 0.2 s through two slots need 0.8 s; the deadline of 0.5 s cuts the rest off.
    assert 2 <= len(answered) <= 4 and seconds < 1.5
    text = metrics.render().decode()
    # "busy" (no slot within the deadline) or "timeout" (a slot, no answer): one error per refusal.
    assert sample(text, "gate_keycloak_errors_total", endpoint="uma") == len(refused)
    assert sample(text, "gate_keycloak_request_seconds_count", endpoint="uma") == 8


def test_hung_keycloak_is_a_503_within_the_deadline(keycloak: FakeKeycloak, realm: Realm) -> None:
    slow = SlowKeycloak(30)
    app = create_app(settings(GATE_KEYCLOAK_TIMEOUT="0.3"), transport=slow)
    began = time.monotonic()
    response = check(TestClient(app), GET_EXPERIMENT, realm.token())
    assert response.status_code == 503
    assert time.monotonic() - began < 2


@pytest.mark.parametrize(
    ("name", "value"),
    [("GATE_WORKERS", "0"), ("GATE_AUDIT_LOG", "/no/such/dir/audit.log"), ("GATE_REDIS_TIMEOUT", "-1"),
     ("GATE_KEYCLOAK_CONCURRENCY", "none"), ("GATE_REDIS_RETRY_INTERVAL", "0")],
)
def test_operating_settings_are_validated(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({"GATE_KEYCLOAK_URL": "http://keycloak.test", name: value})


def test_grafana_dashboard_only_uses_metrics_the_gate_exports() -> None:
    dashboard = json.loads((Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "mlflow-gate.json").read_text())
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\bgate_[a-z_]+", target["expr"])
    }
    exported = {
        sample_name
        for family in Metrics().registry.collect()
        for sample_name in (family.name, f"{family.name}_total", f"{family.name}_bucket", f"{family.name}_count")
    }
    assert used and used <= exported, used - exported


@pytest.mark.parametrize("now", [0.0, 1700000000.0, 1700000000.9996, 1798675199.5, time.time()])
def test_audit_time_is_iso_utc_to_the_millisecond(now: float) -> None:
    expected = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert timestamp(now) == expected


def test_audit_file_is_opened_again_after_logrotate_moved_it(tmp_path: Path) -> None:
    clock = [0.0]
    path = tmp_path / "audit.log"
    log = AuditLog(str(path), clock=lambda: clock[0])
    request = AuditRequest("id-1", "192.0.2.1", "GET", "/health", time.perf_counter())
    log.record(request, Verdict(200, outcome="public"), "")
    path.rename(tmp_path / "audit.log.1")
    clock[0] = 1.0
    log.record(request, Verdict(200, outcome="public"), "")
    assert len((tmp_path / "audit.log.1").read_text().splitlines()) == 1
    assert json.loads(path.read_text())["verdict"] == "public"


def test_sign_in_without_redis_is_a_clear_503(keycloak: FakeKeycloak) -> None:
    app = create_app(
        settings(GATE_CLIENT_SECRET="test-secret", GATE_PUBLIC_URL="http://gateway.test"),
        transport=httpx.MockTransport(keycloak.handle),
        redis=BrokenRedis(),  # type: ignore[arg-type]
    )
    response = TestClient(app).get("/oauth2/start", params={"rd": "/", "go": "1"}, follow_redirects=False)
    assert response.status_code == 503
    assert "session store unreachable" in response.text
    assert response.headers["retry-after"] == "5"


@pytest.mark.parametrize(
    ("method", "url", "form", "endpoint"),
    [
        ("POST", TOKEN_URL, {"grant_type": "urn:ietf:params:oauth:grant-type:uma-ticket"}, "uma"),
        ("POST", TOKEN_URL, {"grant_type": "refresh_token"}, "token"),
        ("GET", JWKS_URL, None, "jwks"),
        ("GET", "http://keycloak.test/admin/realms/mlflow/events", None, "events"),
    ],
)
def test_keycloak_calls_are_labelled_by_endpoint(method: str, url: str, form: dict[str, str] | None, endpoint: str) -> None:
    assert endpoint_of(httpx.Request(method, url, data=form)) == endpoint
