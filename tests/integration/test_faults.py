"""Faults under load: Redis and Keycloak stopped, hung (SIGSTOP) and restarted during mixed traffic.

One mixed load (tests/integration/mixed_load.py, at least 10,000 requests) runs through the real
NGINX and gate while the stack's own Redis and Keycloak processes are broken one after the other.
Throughout: no forbidden request is allowed and no acknowledged write is lost; readiness reports
each state; the gate recovers within 5 s of the dependency answering again. A second test follows
an allowed, a denied, an unauthenticated and an unmapped request through metrics, the audit line
and NGINX's access log, and scans both logs for secrets.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from stack import components, install, procs
from stack.layout import Layout

from .mixed_load import API, MixedLoad, Progress, Record
from .realm_client import RealmClient, gate_counter
from .test_header_spoofing import RecordingGateway, recording_gateway  # noqa: F401 (a fixture)

pytestmark = pytest.mark.integration

MINIMUM_REQUESTS = 10_000
RECOVERY_SECONDS = 5.0
KEYCLOAK_SHUTDOWN_SECONDS = 180.0
REDIS_TIMEOUT = 1.0  # GATE_REDIS_TIMEOUT of the stack's gate (the default)


@pytest.fixture(scope="module")
def layout(stack: dict[str, Any]) -> Layout:
    return Layout.discover()


@pytest.fixture(scope="module")
def realm(stack: dict[str, Any]) -> RealmClient:
    return RealmClient(stack)


def ready(stack: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = httpx.get(f"{stack['gate_url']}/_gate/ready", timeout=10)
    return response.status_code, response.json()


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until `condition()` held; fails the test after `timeout`."""
    began = time.monotonic()
    while not condition():
        if time.monotonic() - began > timeout:
            pytest.fail(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.1)
    return time.monotonic() - began


def readiness_is(stack: dict[str, Any], status: int, state: str) -> Callable[[], bool]:
    return lambda: ready(stack)[0] == status and ready(stack)[1]["status"] == state


def group_signal(layout: Layout, name: str, sig: signal.Signals) -> None:
    pid = procs.alive(layout, name)
    assert pid is not None, f"the stack's {name} is not running"
    os.killpg(pid, sig)


@contextmanager
def hung(layout: Layout, name: str) -> Iterator[float]:
    """SIGSTOP the component's process group (connections are accepted, nothing answers)."""
    group_signal(layout, name, signal.SIGSTOP)
    try:
        yield time.monotonic()
    finally:
        group_signal(layout, name, signal.SIGCONT)


def allowed_bearer(records: list[Record]) -> list[Record]:
    return [r for r in records if r.expect == "allow" and r.user in ("alice", "bob")]


def uncached_question(stack: dict[str, Any], token: str) -> httpx.Response:
    """A permission the load never asks (registered-models#read), by a user nothing asked about
    yet (`fresh_admin`): no decision, nor with workspaces on a permission set, can be cached."""
    return httpx.get(
        f"{stack['gateway_url']}{API}/registered-models/search",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def cached_answers_honoured(progress: Progress, since: float) -> bool:
    return any(r.status == 200 for r in allowed_bearer(progress.since(since)))


def fresh_admin(stack: dict[str, Any]) -> str:
    realm = RealmClient(stack)
    return realm.token(*realm.create_user("faults-fresh", ["Admin"]))


def decision_latencies(layout: Layout, start: float, end: float) -> list[float]:
    """The gate's own latency for each decision made between two wall-clock times."""
    latencies = []
    for text in (layout.state / "gate" / "audit.log").read_text().splitlines():
        line = json.loads(text)
        moment = datetime.fromisoformat(line["time"].replace("Z", "+00:00")).timestamp()
        if start <= moment <= end and line["verdict"] in ("allowed", "denied"):
            latencies.append(float(line["latency_s"]))
    assert latencies, "no decisions in that period"
    return latencies


def start_fresh_keycloak_if_broken(layout: Layout, stack: dict[str, Any]) -> None:
    """If the restarted Keycloak did not come back (say its dev database was damaged), start one
    from scratch as `stack up` does, so the tests after this one still find a working stack."""
    if procs.alive(layout, "keycloak") is not None and components.HEALTH["keycloak"]():
        return
    procs.stop(layout, "keycloak")
    component = components.keycloak(layout, install.find_java_home(), stack["keycloak_admin"]["password"])
    running = procs.start(layout, "keycloak", component.command, component.log, component.env, component.cwd)
    procs.wait_healthy(running, component.probe, 600)


def issues_tokens(load: MixedLoad) -> bool:
    try:
        load.tokens.fetch("carol")
    except httpx.HTTPError:
        return False
    return True


def phase(name: str, progress: Progress, began: float) -> None:
    records = progress.since(began)
    print(f"  {name}: {len(records)} responses, statuses {sorted({r.status for r in records})}", flush=True)


def keycloak_command(layout: Layout) -> tuple[list[str], dict[str, str], Path]:
    """The running Keycloak's command line, environment and directory, to start it again as it was
    (the runner's own start wipes its database, which would change the realm's signing keys)."""
    pid = procs.alive(layout, "keycloak")
    assert pid is not None
    command = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    environ = dict(
        item.split("=", 1) for item in Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0") if "=" in item
    )
    return [part.decode() for part in command], environ, Path(os.readlink(f"/proc/{pid}/cwd"))


@pytest.fixture
def repaired_afterwards(stack: dict[str, Any], layout: Layout) -> Iterator[None]:
    """Whatever happens in the test, Redis and Keycloak run again afterwards for the tests that follow."""
    yield
    for name in ("redis", "keycloak"):
        pid = procs.alive(layout, name)
        if pid is not None:
            os.killpg(pid, signal.SIGCONT)
    if procs.alive(layout, "redis") is None:
        component = components.redis(layout)
        running = procs.start(layout, "redis", component.command, component.log, component.env, component.cwd)
        procs.wait_healthy(running, component.probe, 30)
    start_fresh_keycloak_if_broken(layout, stack)


@pytest.mark.usefixtures("repaired_afterwards")
def test_redis_and_keycloak_faults_under_mixed_load(stack: dict[str, Any], layout: Layout) -> None:
    load = MixedLoad.prepare(stack)
    load.concurrency = 16  # 4 workers at MLflow's pace, 12 sending forbidden requests
    keycloak_health = components.HEALTH["keycloak"]
    assert ready(stack)[1]["status"] == "ok"
    timings: dict[str, float] = {}
    began_all = time.monotonic()
    with load.running(total=10 * MINIMUM_REQUESTS) as progress:
        wait_for(lambda: progress.done >= 300, 60, "the load to warm the caches")

        print("\nRedis stopped", flush=True)
        began = time.monotonic()
        procs.stop(layout, "redis")
        timings["redis down -> ready degraded"] = wait_for(readiness_is(stack, 200, "degraded"), 5, "degraded")
        time.sleep(4)
        during = progress.since(began + 1.0)
        assert [r for r in allowed_bearer(during) if 200 <= r.status < 300], "bearer requests stopped being allowed"
        sessions = {r.status for r in during if r.user == "session"}
        assert sessions <= {503}, f"sessions without Redis must fail closed with 503, got {sessions}"
        phase("Redis stopped", progress, began)

        component = components.redis(layout)
        procs.start(layout, "redis", component.command, component.log, component.env, component.cwd)
        returned = time.monotonic()
        wait_for(component.probe, 10, "Redis to start again")
        timings["redis back -> ready ok"] = wait_for(readiness_is(stack, 200, "ok"), RECOVERY_SECONDS, "Redis recovery")
        load.renew_session()  # the restarted Redis (no persistence) lost every session
        timings["redis back -> session works"] = time.monotonic() - returned

        print("Redis hung (SIGSTOP)", flush=True)
        trips = gate_counter(stack, "gate_redis_breaker_trips_total")
        with hung(layout, "redis") as began:
            settled_from = time.time() + 2.0
            timings["redis hung -> ready degraded"] = wait_for(readiness_is(stack, 200, "degraded"), 5, "degraded")
            time.sleep(4)
            assert [r for r in allowed_bearer(progress.since(began + 2.0)) if r.status == 200]
            phase("Redis hung", progress, began)
            settled_until = time.time()
        timings["redis continued -> ready ok"] = wait_for(readiness_is(stack, 200, "ok"), RECOVERY_SECONDS, "recovery")
        # One timeout opened the breaker; after that no check waited for Redis (the gate's own
        # audit latencies, since end-to-end times include MLflow's).
        assert gate_counter(stack, "gate_redis_breaker_trips_total") == trips + 1
        settled = decision_latencies(layout, settled_from, settled_until)
        timings["redis hung: slowest gate decision after 2 s"] = max(settled)
        assert max(settled) < REDIS_TIMEOUT, "checks kept waiting on the hung Redis"

        print("Keycloak hung (SIGSTOP)", flush=True)
        unasked = fresh_admin(stack)
        with hung(layout, "keycloak") as began:
            timings["keycloak hung -> ready 503"] = wait_for(readiness_is(stack, 503, "unavailable"), 8, "unavailable")
            asked = time.monotonic()
            assert uncached_question(stack, unasked).status_code == 503
            timings["keycloak hung: uncached question answered 503 after"] = time.monotonic() - asked
            cached = allowed_bearer(progress.since(began + 1.0))
            assert [r for r in cached if r.status == 200], "cached decisions were not honoured"
            phase("Keycloak hung", progress, began)
        timings["keycloak continued -> ready ok"] = wait_for(readiness_is(stack, 200, "ok"), RECOVERY_SECONDS, "ok")

        print("Keycloak stopped", flush=True)
        command, environ, cwd = keycloak_command(layout)
        log = layout.state / "keycloak" / "keycloak.log"
        began = time.monotonic()
        # A generous grace: a Keycloak killed before it closes its dev (H2) database may not start again.
        procs.stop(layout, "keycloak", grace=KEYCLOAK_SHUTDOWN_SECONDS)
        timings["keycloak down -> ready 503"] = wait_for(readiness_is(stack, 503, "unavailable"), 5, "unavailable")
        assert uncached_question(stack, unasked).status_code == 503
        # The load's users may be waiting on a token renewal from the stopping Keycloak (5 s
        # timeout): give them time to send requests rather than judging an empty window.
        wait_for(lambda: cached_answers_honoured(progress, began + 1.0), 20, "cached decisions honoured")
        cached = allowed_bearer(progress.since(began + 1.0))
        assert [r for r in cached if r.status == 200], "cached decisions were not honoured"
        procs.start(layout, "keycloak", command, log, environ, cwd)
        timings["keycloak start"] = wait_for(keycloak_health, 240, "Keycloak to start again")
        # Back means serving: a freshly booted Keycloak's first token requests can take seconds.
        timings["keycloak ready -> issues tokens"] = wait_for(lambda: issues_tokens(load), 240, "Keycloak tokens")
        phase("Keycloak stopped and starting", progress, began)
        returned = time.monotonic()
        timings["keycloak back -> ready ok"] = wait_for(readiness_is(stack, 200, "ok"), RECOVERY_SECONDS, "recovery")
        unasked = fresh_admin(stack)
        wait_for(lambda: uncached_question(stack, unasked).status_code == 200, RECOVERY_SECONDS, "new decisions")
        timings["keycloak back -> new decisions allowed"] = time.monotonic() - returned

        wait_for(lambda: progress.done >= MINIMUM_REQUESTS, 600, f"{MINIMUM_REQUESTS} requests")
        progress.stop.set()
    result = progress.result()
    print(result.summary())
    print(f"faults test took {time.monotonic() - began_all:.0f} s; timings:")
    for name, seconds in timings.items():
        print(f"  {name}: {seconds:.2f} s")
    assert len(result.records) >= MINIMUM_REQUESTS
    result.verify()


def test_audit_lines_metrics_and_access_log_for_each_kind_of_answer(
    stack: dict[str, Any], layout: Layout, realm: RealmClient
) -> None:
    username, password = realm.create_user("audited", ["Default"])
    token = realm.token(username, password)
    gateway = stack["gateway_url"]
    bearer = {"Authorization": f"Bearer {token}"}
    marker = secrets.token_hex(4)
    before = {
        outcome: gate_counter(stack, "gate_checks_total", outcome=outcome)
        for outcome in ("allowed", "denied", "unauthenticated", "unmapped")
    }
    with httpx.Client(base_url=gateway, timeout=30) as http:
        experiment = http.post(f"{API}/experiments/create", json={"name": f"audited-{marker}"}, headers=bearer)
        assert experiment.status_code == 200
        experiment_id = experiment.json()["experiment_id"]
        answers = {
            "allowed": http.get(f"{API}/experiments/get", params={"experiment_id": experiment_id}, headers=bearer),
            "denied": http.post(f"{API}/experiments/delete", json={"experiment_id": experiment_id}, headers=bearer),
            "unauthenticated": http.get(f"{API}/logged-models/m-{marker}"),
            "unmapped": http.post(f"{API}/no-such-route-{marker}", headers=bearer),
        }
    assert {kind: answer.status_code for kind, answer in answers.items()} == {
        "allowed": 200,
        "denied": 403,
        "unauthenticated": 401,
        "unmapped": 403,
    }
    for outcome, count in before.items():
        assert gate_counter(stack, "gate_checks_total", outcome=outcome) >= count + 1, outcome
    assert gate_counter(stack, "gate_permission_checks_total", permission="experiments#delete", outcome="denied") >= 1

    audit_text = (layout.state / "gate" / "audit.log").read_text()
    access_text = (layout.state / "nginx" / "nginx.log").read_text()

    def audit_line(match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        found = [line for line in map(json.loads, audit_text.splitlines()) if match(line)]
        assert found, "no audit line"
        return found[-1]

    lines = {
        "allowed": audit_line(lambda l: l["user"] == username and l["permission"] == "experiments#read"),
        "denied": audit_line(lambda l: l["user"] == username and l["permission"] == "experiments#delete"),
        "unauthenticated": audit_line(lambda l: l["path"] == f"{API}/logged-models/m-{marker}"),
        "unmapped": audit_line(lambda l: l["path"] == f"{API}/no-such-route-{marker}"),
    }
    access = {
        line["request_id"]: line
        for line in (json.loads(text) for text in access_text.splitlines() if text.startswith('{"time"'))
    }
    for verdict, line in lines.items():
        assert line["verdict"] == verdict
        assert line["client_address"] == "127.0.0.1" and line["method"] in ("GET", "POST")
        assert len(line["request_id"]) == 32, line
        nginx_line = access[line["request_id"]]  # the same request id in NGINX's access log
        assert nginx_line["path"] == line["path"] and nginx_line["status"] == answers[verdict].status_code
    assert lines["allowed"]["client"] == "mlflow-cli" and lines["allowed"]["cache"] in ("miss", "memory", "redis")
    assert access[lines["allowed"]["request_id"]]["user"] == username

    secrets_used = [
        token,
        token.split(".")[2],
        password,
        stack["clients"]["gate"]["client_secret"],
        stack["keycloak_admin"]["password"],
        *(user["password"] for user in stack["users"].values()),
    ]
    for text, where in ((audit_text, "audit log"), (access_text, "NGINX access log")):
        assert not re.search(r"Bearer [A-Za-z0-9._~+/-]{16}|mlflow_gate_session=|eyJ[A-Za-z0-9_-]{10}", text), where
        leaked = [value[:6] + "..." for value in secrets_used if value in text]
        assert not leaked, f"secrets in the {where}: {leaked}"


def test_mlflow_gets_the_request_id_of_the_audit_line(
    recording_gateway: RecordingGateway, realm: RealmClient, layout: Layout
) -> None:
    _, seen = recording_gateway.send(
        "GET",
        f"{API}/experiments/search?max_results=1",
        [("Authorization", f"Bearer {realm.token('bob')}"), ("X-Request-Id", "chosen-by-the-client")],
    )
    [request_id] = seen.values("X-Request-Id")
    assert re.fullmatch(r"[0-9a-f]{32}", request_id), "NGINX's $request_id replaces the client's"
    audit_lines = [json.loads(line) for line in (layout.state / "gate" / "audit.log").read_text().splitlines()]
    [line] = [line for line in audit_lines if line["request_id"] == request_id]
    assert (line["user"], line["verdict"], line["path"]) == ("bob", "allowed", f"{API}/experiments/search")
