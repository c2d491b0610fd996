"""The replica topology under failure: three gates, two NGINX, two MLflow on one PostgreSQL.

Runs against `python3 -m stack up --replicas` (started here when another topology runs). The
chaos test kills -9 one gate, one MLflow and one NGINX in turn during a mixed load and restarts
each, then counts: forbidden requests let through, acknowledged writes missing from the
database, and client-visible errors outside the killed NGINX must all be zero.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from stack import procs, replicas
from stack.layout import Layout

from . import signin_flow
from .conftest import REPO, STACK_JSON
from .mixed_load import MixedLoad
from .realm_client import RealmClient, gate_counter

pytestmark = [pytest.mark.integration, pytest.mark.replicas]

SESSION_COOKIE = "mlflow_gate_session"
SEARCH_URI = "/ajax-api/2.0/mlflow/experiments/search?max_results=1"
MIN_REQUESTS = 10_000
DOWN_SECONDS = 2.0
REVOCATION_BUDGET_SECONDS = 10.0


def _runner(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stack", *args], cwd=REPO, text=True, check=False)


def _replicas_running() -> bool:
    if not STACK_JSON.exists() or json.loads(STACK_JSON.read_text()).get("topology") != "replicas":
        return False
    return subprocess.run([sys.executable, "-m", "stack", "status"], cwd=REPO, capture_output=True, check=False).returncode == 0


@pytest.fixture(scope="module")
def topology() -> Iterator[dict[str, Any]]:
    """The running replica stack, or one started now (replacing a single-process stack, which
    the session's `stack` fixture stops at the end if it started it; replica tests run last)."""
    replaced = STACK_JSON.exists()
    started_here = not _replicas_running()
    if started_here:
        began = time.monotonic()
        if _runner("up", "--replicas").returncode != 0:
            pytest.fail("`python3 -m stack up --replicas` failed; see its output above and .stack/*/")
        print(f"replica topology up in {time.monotonic() - began:.0f} s")
    try:
        yield json.loads(STACK_JSON.read_text())
    finally:
        if started_here and not replaced:
            _runner("down")


@pytest.fixture(scope="module")
def realm(topology: dict[str, Any]) -> RealmClient:
    return RealmClient(topology)


def summed(topology: dict[str, Any], name: str, **labels: str) -> float:
    """A gate metric added up over every gate of the topology."""
    return sum(gate_counter({"gate_url": url}, name, **labels) for url in topology["gate_urls"])


def ask_gate(client: httpx.Client, gate_url: str, uri: str, method: str = "GET", token: str | None = None) -> httpx.Response:
    """The question NGINX's auth subrequest asks, put to one gate directly."""
    headers = {"X-Original-Method": method, "X-Original-URI": uri, "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return client.get(f"{gate_url}/_gate/check", headers=headers)


def sign_in_across_gates(topology: dict[str, Any], client: httpx.Client, username: str) -> None:
    """Start the sign-in at the first gate and finish it at the second (state in Redis)."""
    first, second = topology["gate_urls"][:2]
    start = client.get(f"{first}/oauth2/start", params={"rd": "/", "go": "1"})
    assert start.status_code == 302, start.text
    callback = signin_flow.log_in(start.headers["location"], username, topology["users"][username]["password"])
    path_and_query = callback.url.split("/oauth2/callback", 1)[1]
    finished = client.get(f"{second}/oauth2/callback{path_and_query}")
    assert finished.status_code == 302, finished.text
    assert client.cookies.get(SESSION_COOKIE)


def test_topology_lists_every_instance(topology: dict[str, Any]) -> None:
    assert len(topology["gate_urls"]) == 3 and len(topology["gateway_urls"]) == 2 and len(topology["mlflow_urls"]) == 2
    assert topology["postgres_url"].startswith("postgresql://")
    for url in topology["gate_urls"]:
        assert httpx.get(f"{url}/_gate/health", timeout=10).status_code == 200
    for url in topology["gateway_urls"]:
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200
    # Both MLflow servers see one store: an experiment made through one is read through the other.
    token = RealmClient(topology).token("alice")
    headers = {"Authorization": f"Bearer {token}"}
    first, second = topology["gateway_urls"]
    created = httpx.post(
        f"{first}/api/2.0/mlflow/experiments/create", headers=headers, json={"name": f"shared-{time.time_ns()}"}, timeout=30
    )
    assert created.status_code == 200, created.text
    experiment_id = created.json()["experiment_id"]
    for mlflow_url in topology["mlflow_urls"]:
        direct = httpx.get(
            f"{mlflow_url}/api/2.0/mlflow/experiments/get",
            params={"experiment_id": experiment_id},
            headers={"Host": f"127.0.0.1:{topology['mlflow_urls'][0].rsplit(':', 1)[1]}"},
            timeout=30,
        )
        assert direct.status_code == 200, direct.text
    assert httpx.get(f"{second}/api/2.0/mlflow/experiments/get", params={"experiment_id": experiment_id}, headers=headers, timeout=30).status_code == 200


def test_a_session_made_through_one_gate_works_through_every_gate(topology: dict[str, Any]) -> None:
    with httpx.Client(timeout=30, follow_redirects=False) as client:
        sign_in_across_gates(topology, client, "bob")
        for gate_url in topology["gate_urls"]:
            answer = ask_gate(client, gate_url, SEARCH_URI)
            assert answer.status_code == 200, (gate_url, answer.status_code, answer.headers)
            assert answer.headers["x-auth-request-user"] == "bob"
        for gateway in topology["gateway_urls"]:
            assert client.get(f"{gateway}{SEARCH_URI}").status_code == 200


def test_concurrent_refreshes_through_two_gates_keep_the_session(topology: dict[str, Any], realm: RealmClient) -> None:
    """With a 20 s access token the gate refreshes within its 15 s margin, i.e. after ~5 s;
    two gates asked at the same moment must refresh once between them, never end the session."""
    gate_client = topology["clients"]["gate"]["client_id"]
    realm.set_client_attributes(gate_client, {"access.token.lifespan": "20"})
    try:
        with httpx.Client(timeout=30, follow_redirects=False) as client:
            sign_in_across_gates(topology, client, "alice")
            first, second = topology["gate_urls"][:2]
            rounds = 3
            before = summed(topology, "gate_session_refreshes_total")
            for _ in range(rounds):
                time.sleep(6)
                with ThreadPoolExecutor(max_workers=8) as pool:
                    answers = list(pool.map(lambda url: ask_gate(client, url, SEARCH_URI), [first, second] * 4))
                assert [answer.status_code for answer in answers] == [200] * 8
            refreshes = summed(topology, "gate_session_refreshes_total") - before
            print(f"session refreshes across gates: {refreshes:.0f} in {rounds} rounds of 8 concurrent checks")
            assert refreshes == rounds
            assert ask_gate(client, topology["gate_urls"][2], SEARCH_URI).status_code == 200
    finally:
        realm.set_client_attributes(gate_client, {"access.token.lifespan": ""})


def test_one_keycloak_decision_per_question_across_all_gates(topology: dict[str, Any], realm: RealmClient) -> None:
    username, password = realm.create_user("replica-decisions", ["Default"])
    token = realm.token(username, password)
    questions = [
        ("GET", "/api/2.0/mlflow/experiments/get?experiment_id=0"),
        ("POST", "/api/2.0/mlflow/runs/create"),
        ("POST", "/api/2.0/mlflow/experiments/delete"),
    ]
    before = summed(topology, "gate_keycloak_request_seconds_count", endpoint="uma")
    with httpx.Client(timeout=30) as client:
        for method, uri in questions:
            for gate_url in topology["gate_urls"]:
                expected = 403 if uri.endswith("/experiments/delete") else 200
                assert ask_gate(client, gate_url, uri, method, token).status_code == expected
    calls = summed(topology, "gate_keycloak_request_seconds_count", endpoint="uma") - before
    print(f"Keycloak decision calls for {len(questions)} questions asked at {len(topology['gate_urls'])} gates: {calls:.0f}")
    # With workspaces on, one call answers the user's whole permission set, shared by every gate.
    assert calls == (1 if topology["workspaces"] else len(questions))


def test_a_role_removed_in_keycloak_is_refused_at_every_gate_within_ten_seconds(
    topology: dict[str, Any], realm: RealmClient
) -> None:
    """Each gate polls Keycloak's events itself; timed from the start of the admin API request."""
    username, password = realm.create_user("replica-revoked", ["Admin"])
    token = realm.token(username, password)
    delete = "/api/2.0/mlflow/experiments/delete"
    gates = topology["gate_urls"]
    headers = realm.admin_headers()
    uid = httpx.get(f"{realm.admin_base}/users", params={"username": username, "exact": "true"}, headers=headers, timeout=30).json()[0]["id"]
    admin_role = httpx.get(f"{realm.admin_base}/roles/Admin", headers=headers, timeout=30).json()
    refused_after: dict[str, float] = {}
    with httpx.Client(timeout=30) as client:
        for gate_url in gates:
            assert ask_gate(client, gate_url, delete, "POST", token).status_code == 200, gate_url
        removed = time.monotonic()
        mappings = f"{realm.admin_base}/users/{uid}/role-mappings/realm"
        httpx.request("DELETE", mappings, headers=headers, json=[admin_role], timeout=30).raise_for_status()
        while len(refused_after) < len(gates) and time.monotonic() - removed < REVOCATION_BUDGET_SECONDS + 10:
            for gate_url in gates:
                if gate_url not in refused_after and ask_gate(client, gate_url, delete, "POST", token).status_code == 403:
                    refused_after[gate_url] = time.monotonic() - removed
            time.sleep(0.1)
    print("\nAdmin removed in Keycloak, refused after: " + ", ".join(f"{url} {s:.2f} s" for url, s in refused_after.items()))
    assert len(refused_after) == len(gates), refused_after
    assert max(refused_after.values()) < REVOCATION_BUDGET_SECONDS


class Chaos:
    """kill -9 an instance's whole process group, wait, restart it; record when each happened."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.events: dict[str, float] = {}

    def kill_and_restart(self, name: str) -> None:
        pid = procs.alive(self.layout, name)
        assert pid is not None, f"{name} is not running"
        self.events[f"{name} killed"] = time.monotonic()
        os.killpg(pid, signal.SIGKILL)
        while procs.alive(self.layout, name) is not None:
            time.sleep(0.05)
        time.sleep(DOWN_SECONDS)
        component = replicas.instance(self.layout, name)
        running = procs.start(self.layout, component.name, component.command, component.log, component.env, component.cwd)
        procs.wait_healthy(running, component.probe, component.timeout)
        self.events[f"{name} healthy"] = time.monotonic()


def test_kill_a_gate_an_mlflow_and_an_nginx_under_mixed_load(topology: dict[str, Any]) -> None:
    load = MixedLoad.prepare(topology, spread_over=tuple(topology["gateway_urls"]))
    chaos = Chaos(Layout.discover())
    killed_nginx, killed_gateway = "nginx-2", topology["gateway_urls"][1]

    began = time.monotonic()
    # The load runs until all three kills are over and MIN_REQUESTS have been answered.
    with load.running(total=100 * MIN_REQUESTS) as progress:
        for number, name in enumerate(("gate-2", "mlflow-2", killed_nginx), start=1):
            while progress.done < MIN_REQUESTS * number // 5:
                time.sleep(0.2)
            chaos.kill_and_restart(name)
        while progress.done < MIN_REQUESTS:
            time.sleep(0.2)
        progress.stop.set()
    result = progress.result()

    down = (chaos.events[f"{killed_nginx} killed"], chaos.events[f"{killed_nginx} healthy"])
    errors = [r for r in result.records if r.status == 0 or r.status >= 500]
    excused = [r for r in errors if r.gateway == killed_gateway and r.started + r.seconds >= down[0] and r.started <= down[1]]
    unexcused = [r for r in errors if r not in excused]
    lost = result.lost_writes()
    per_gateway = Counter((r.gateway, "error" if r in errors else r.expect) for r in result.records)

    print(f"\nchaos load on the replica topology: {result.summary()}")
    for (gateway, kind), count in sorted(per_gateway.items()):
        print(f"  via {gateway}: {kind} {count}")
    print("  events (s after start): " + ", ".join(f"{event} {at - began:.1f}" for event, at in chaos.events.items()))
    print(f"  client-visible errors: {len(errors)} ({len(excused)} at {killed_gateway} while it was down, {len(unexcused)} elsewhere)")
    print(f"  forbidden requests allowed: {len(result.forbidden_allowed)}; acknowledged writes lost: {len(lost)} of {len(result.writes)}")
    for record in unexcused[:10]:
        print(f"  unexcused error {record.started - began:.1f} s via {record.gateway}: {record}")

    assert len(result.records) >= MIN_REQUESTS
    assert not unexcused
    result.verify()  # zero forbidden requests allowed, zero acknowledged writes lost, canary untouched
