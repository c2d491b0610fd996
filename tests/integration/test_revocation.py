"""Rights changes reach every gate process within 10 s, against the real Keycloak, Redis and NGINX.

Each test warms the decision caches of two gate processes (the stack's, reached through NGINX, and a
second one started here on the same Redis), changes the user's rights in Keycloak while the user
keeps a token that has not expired, and measures how long until both gates refuse that token.
Changes are made with mlflow-gate-admin and, as the admin console does, with Keycloak's admin REST
API directly.
"""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest

from authz_service.admin import cli

from .local_processes import gate
from .realm_client import RealmClient

pytestmark = pytest.mark.integration

BUDGET_SECONDS = 10.0
DELETE = ("POST", "/api/2.0/mlflow/experiments/delete")
SEARCH = ("GET", "/api/2.0/mlflow/experiments/search?max_results=1")
# Deleting an experiment that does not exist: the gate's allow reaches MLflow (404), a refusal does not.
MISSING = {"experiment_id": "999999999"}


@pytest.fixture(scope="module")
def realm(stack: dict[str, Any]) -> RealmClient:
    return RealmClient(stack)


AdminHeaders = Callable[[], dict[str, str]]


@pytest.fixture(scope="module")
def admin(realm: RealmClient) -> AdminHeaders:
    """Keycloak admin headers, signed in again only when the 60-second admin token nears its end."""
    signed_in: dict[str, Any] = {"at": 0.0}

    def headers() -> dict[str, str]:
        if time.monotonic() - signed_in["at"] > 40:
            signed_in.update(at=time.monotonic(), headers=realm.admin_headers())
        return signed_in["headers"]

    return headers


@pytest.fixture(scope="module")
def second_gate(stack: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Another gate process on the same Keycloak and Redis, polling Keycloak's events for itself."""
    settings = {
        "GATE_KEYCLOAK_URL": stack["keycloak_url"],
        "GATE_REALM": stack["realm"],
        "GATE_CLIENT_ID": stack["clients"]["gate"]["client_id"],
        "GATE_CLIENT_SECRET": stack["clients"]["gate"]["client_secret"],
        "GATE_REDIS_URL": stack["redis_url"],
    }
    with gate(tmp_path_factory.mktemp("second-gate"), settings) as port:
        url = f"http://127.0.0.1:{port}"
        wait_until_polling(url)
        yield url


@pytest.fixture(autouse=True)
def admin_env(stack: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_GATE_ADMIN_KEYCLOAK_URL", stack["keycloak_url"])
    monkeypatch.setenv("MLFLOW_GATE_ADMIN_REALM", stack["realm"])
    monkeypatch.setenv("MLFLOW_GATE_ADMIN_USER", stack["keycloak_admin"]["username"])
    monkeypatch.setenv("MLFLOW_GATE_ADMIN_PASSWORD", stack["keycloak_admin"]["password"])


def admin_cli(*argv: str) -> None:
    sys.stdin = io.StringIO("")
    try:
        assert cli.main(list(argv)) == 0, argv
    finally:
        sys.stdin = sys.__stdin__


def polls(gate_url: str, result: str) -> float:
    """The gate's count of event reads with this result (absent until the first one)."""
    sample = f'gate_revocation_polls_total{{result="{result}"}} '
    for line in httpx.get(f"{gate_url}/_gate/metrics", timeout=10).text.splitlines():
        if line.startswith(sample):
            return float(line.removeprefix(sample))
    return 0.0


def wait_until_polling(gate_url: str) -> None:
    deadline = time.monotonic() + 30
    while polls(gate_url, "ok") < 1:
        assert polls(gate_url, "failed") == 0, "the gate cannot read Keycloak's events"
        assert time.monotonic() < deadline, f"{gate_url} never read Keycloak's events"
        time.sleep(0.2)


Probe = Callable[[str], int]


def probes(stack: dict[str, Any], second_gate: str, request: tuple[str, str]) -> dict[str, Probe]:
    """The status each gate gives a token for `request`: through NGINX, and at the second gate's check."""
    method, path = request
    body = MISSING if request == DELETE else None

    def through_nginx(token: str) -> int:
        headers = {"Authorization": f"Bearer {token}"}
        return httpx.request(method, f"{stack['gateway_url']}{path}", headers=headers, json=body, timeout=30).status_code

    def second(token: str) -> int:
        headers = {"Authorization": f"Bearer {token}", "X-Original-Method": method, "X-Original-URI": path}
        return httpx.get(f"{second_gate}/_gate/check", headers=headers, timeout=30).status_code

    return {"gate via NGINX": through_nginx, "second gate": second}


def refused(status: int) -> bool:
    return status in (401, 403)


def assert_allowed_and_cached(gates: dict[str, Probe], token: str) -> None:
    for _ in range(2):
        statuses = {name: probe(token) for name, probe in gates.items()}
        assert not any(refused(status) for status in statuses.values()), statuses


@dataclass(frozen=True)
class Change:
    started: float
    """Wall-clock time the change's request (or CLI command) started."""
    took: float


def changed(make_change: Callable[[], object]) -> Change:
    started = time.time()
    make_change()
    return Change(started, time.time() - started)


def recorded_at(realm: RealmClient, admin: AdminHeaders, uid: str, change: Change) -> float:
    """When Keycloak recorded the first change to this user since `change` started (its event time).

    The delay is measured from there, not from the start of a CLI command that, on a loaded
    machine, spends seconds signing in before it changes anything.
    """
    since = {"dateFrom": int(change.started * 1000)}
    admin_events = httpx.get(f"{realm.admin_base}/admin-events", params=since, headers=admin(), timeout=30).json()
    logouts = httpx.get(
        f"{realm.admin_base}/events", params={**since, "user": uid, "type": "LOGOUT"}, headers=admin(), timeout=30
    ).json()
    times = [event["time"] for event in admin_events if event["resourcePath"].startswith(f"users/{uid}")]
    times += [event["time"] for event in logouts]
    assert times, "Keycloak recorded no event for the change"
    return min(times) / 1000


def refusals(gates: dict[str, Probe], token: str, change: Change) -> dict[str, float]:
    """Probe every gate until each refuses the token; the wall-clock time each first did."""
    assert jwt.decode(token, options={"verify_signature": False})["exp"] > time.time() + BUDGET_SECONDS + 5
    refused_at: dict[str, float] = {}
    last: dict[str, int] = {}
    while len(refused_at) < len(gates) and time.time() - change.started < change.took + BUDGET_SECONDS + 10:
        for name, probe in gates.items():
            if name not in refused_at:
                last[name] = probe(token)
                if refused(last[name]):
                    refused_at[name] = time.time()
        time.sleep(0.1)
    assert len(refused_at) == len(gates), f"still not refused {BUDGET_SECONDS + 10} s after the change: {last}"
    return refused_at


def report(what: str, outcome: str, at: dict[str, float], change: Change, recorded: float) -> None:
    """Prints and checks the delay from Keycloak's record of the change to each gate's new answer."""
    delays = {name: moment - recorded for name, moment in at.items()}
    timings = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in delays.items())
    print(f"\n{what}: {outcome} after {timings} (the change's request took {change.took:.2f} s)")
    assert max(delays.values()) < BUDGET_SECONDS, delays


def user_id(realm: RealmClient, admin: AdminHeaders, username: str) -> str:
    found = httpx.get(
        f"{realm.admin_base}/users", params={"username": username, "exact": "true"}, headers=admin(), timeout=30
    )
    found.raise_for_status()
    return found.json()[0]["id"]


@pytest.fixture
def fresh_user(realm: RealmClient, admin: AdminHeaders) -> Iterator[tuple[str, str]]:
    """A Default user of this test alone, deleted afterwards."""
    username, password = realm.create_user("revocation", ["Default"])
    yield username, password
    httpx.delete(f"{realm.admin_base}/users/{user_id(realm, admin, username)}", headers=admin(), timeout=30)


def test_revoking_admin_with_the_cli_refuses_bobs_unexpired_token_at_every_gate(
    stack: dict[str, Any], realm: RealmClient, admin: AdminHeaders, second_gate: str
) -> None:
    alice = {"Authorization": f"Bearer {realm.token('alice')}"}
    created = httpx.post(
        f"{stack['gateway_url']}/api/2.0/mlflow/experiments/create",
        headers=alice, json={"name": f"revocation-{time.time_ns()}"}, timeout=30,
    )
    experiment = {"experiment_id": created.json()["experiment_id"]}
    gates = probes(stack, second_gate, DELETE)
    try:
        admin_cli("role", "grant", "bob", "Admin")
        token = realm.token("bob")
        deleted = httpx.post(
            f"{stack['gateway_url']}{DELETE[1]}", headers={"Authorization": f"Bearer {token}"}, json=experiment, timeout=30
        )
        assert deleted.status_code == 200, deleted.text
        assert_allowed_and_cached(gates, token)
        change = changed(lambda: admin_cli("role", "revoke", "bob", "Admin"))
        refused_at = refusals(gates, token, change)
    finally:
        admin_cli("role", "revoke", "bob", "Admin")
    recorded = recorded_at(realm, admin, user_id(realm, admin, "bob"), change)
    report("Admin revoked from bob (mlflow-gate-admin role revoke)", "refused", refused_at, change, recorded)
    assert not refused(probes(stack, second_gate, SEARCH)["gate via NGINX"](token)), "bob keeps his Default rights"


def test_removing_a_role_in_keycloaks_admin_api_refuses_at_every_gate(
    stack: dict[str, Any], realm: RealmClient, admin: AdminHeaders, second_gate: str, fresh_user: tuple[str, str]
) -> None:
    username, password = fresh_user
    headers = admin()
    admin_role = httpx.get(f"{realm.admin_base}/roles/Admin", headers=headers, timeout=30).json()
    mappings = f"{realm.admin_base}/users/{user_id(realm, admin, username)}/role-mappings/realm"
    httpx.post(mappings, headers=headers, json=[admin_role], timeout=30).raise_for_status()
    token = realm.token(username, password)
    gates = probes(stack, second_gate, DELETE)
    assert_allowed_and_cached(gates, token)
    change = changed(
        lambda: httpx.request("DELETE", mappings, headers=headers, json=[admin_role], timeout=30).raise_for_status()
    )
    refused_at = refusals(gates, token, change)
    recorded = recorded_at(realm, admin, user_id(realm, admin, username), change)
    report("Admin removed through the admin REST API (as the console does)", "refused", refused_at, change, recorded)


@pytest.mark.parametrize("how", ["mlflow-gate-admin user disable", "admin REST API (console switch)"])
def test_disabling_a_user_refuses_at_every_gate(
    stack: dict[str, Any], realm: RealmClient, admin: AdminHeaders, second_gate: str, fresh_user: tuple[str, str], how: str
) -> None:
    username, password = fresh_user
    token = realm.token(username, password)
    gates = probes(stack, second_gate, SEARCH)
    assert_allowed_and_cached(gates, token)
    if how.startswith("mlflow-gate-admin"):
        change = changed(lambda: admin_cli("user", "disable", username))
    else:
        headers = admin()
        user = f"{realm.admin_base}/users/{user_id(realm, admin, username)}"
        document = httpx.get(user, headers=headers, timeout=30).json()
        change = changed(
            lambda: httpx.put(user, headers=headers, json={**document, "enabled": False}, timeout=30).raise_for_status()
        )
    refused_at = refusals(gates, token, change)
    recorded = recorded_at(realm, admin, user_id(realm, admin, username), change)
    report(f"user disabled ({how})", "refused", refused_at, change, recorded)


def test_signout_refuses_at_every_gate(
    stack: dict[str, Any], realm: RealmClient, admin: AdminHeaders, second_gate: str, fresh_user: tuple[str, str]
) -> None:
    username, password = fresh_user
    token = realm.token(username, password)
    gates = probes(stack, second_gate, SEARCH)
    assert_allowed_and_cached(gates, token)
    change = changed(lambda: admin_cli("signout", username))
    refused_at = refusals(gates, token, change)
    recorded = recorded_at(realm, admin, user_id(realm, admin, username), change)
    report("user signed out (mlflow-gate-admin signout)", "refused", refused_at, change, recorded)


def test_signing_out_at_keycloak_refuses_the_sessions_token_at_every_gate(
    stack: dict[str, Any], realm: RealmClient, admin: AdminHeaders, second_gate: str, fresh_user: tuple[str, str]
) -> None:
    """The user's own sign-out (an application's OIDC logout): a user event, not an admin event."""
    username, password = fresh_user
    signed_in = httpx.post(
        f"{realm.base}/protocol/openid-connect/token",
        data={"grant_type": "password", "client_id": stack["clients"]["cli"]["client_id"],
              "username": username, "password": password, "scope": "openid"},
        timeout=30,
    ).json()
    token = signed_in["access_token"]
    gates = probes(stack, second_gate, SEARCH)
    assert_allowed_and_cached(gates, token)
    logout = f"{realm.base}/protocol/openid-connect/logout"
    form = {"client_id": stack["clients"]["cli"]["client_id"], "refresh_token": signed_in["refresh_token"]}
    change = changed(lambda: httpx.post(logout, data=form, timeout=30).raise_for_status())
    refused_at = refusals(gates, token, change)
    recorded = recorded_at(realm, admin, user_id(realm, admin, username), change)
    report("user signed out at Keycloak (OIDC logout, a LOGOUT user event)", "refused", refused_at, change, recorded)


def test_group_membership_grants_and_revokes_within_the_budget(
    stack: dict[str, Any], realm: RealmClient, admin: AdminHeaders, second_gate: str, fresh_user: tuple[str, str]
) -> None:
    """A cached refusal also gives way: joining a group holding Admin allows deletes with the same token."""
    username, password = fresh_user
    headers = admin()
    group_name = f"revocation-admins-{time.time_ns()}"
    httpx.post(f"{realm.admin_base}/groups", headers=headers, json={"name": group_name}, timeout=30).raise_for_status()
    group = httpx.get(
        f"{realm.admin_base}/groups", params={"search": group_name, "exact": "true"}, headers=headers, timeout=30
    ).json()[0]
    try:
        admin_role = httpx.get(f"{realm.admin_base}/roles/Admin", headers=headers, timeout=30).json()
        httpx.post(
            f"{realm.admin_base}/groups/{group['id']}/role-mappings/realm", headers=headers, json=[admin_role], timeout=30
        ).raise_for_status()
        token = realm.token(username, password)
        gates = probes(stack, second_gate, DELETE)
        assert all(probe(token) == 403 for probe in gates.values())
        membership = f"{realm.admin_base}/users/{user_id(realm, admin, username)}/groups/{group['id']}"
        uid = user_id(realm, admin, username)
        change = changed(lambda: httpx.put(membership, headers=headers, timeout=30).raise_for_status())
        allowed_at: dict[str, float] = {}
        while len(allowed_at) < len(gates) and time.time() - change.started < change.took + BUDGET_SECONDS + 10:
            for name, probe in gates.items():
                if name not in allowed_at and not refused(probe(token)):
                    allowed_at[name] = time.time()
            time.sleep(0.1)
        assert len(allowed_at) == len(gates), "the membership never took effect"
        report("group membership added", "allowed", allowed_at, change, recorded_at(realm, admin, uid, change))
        change = changed(lambda: httpx.delete(membership, headers=headers, timeout=30).raise_for_status())
        refused_at = refusals(gates, token, change)
        report("group membership removed", "refused", refused_at, change, recorded_at(realm, admin, uid, change))
    finally:
        httpx.delete(f"{realm.admin_base}/groups/{group['id']}", headers=headers, timeout=30)


def test_the_gate_reads_events_with_its_own_minimal_service_account(
    stack: dict[str, Any], realm: RealmClient, admin: AdminHeaders
) -> None:
    headers = admin()
    clients = httpx.get(
        f"{realm.admin_base}/clients", params={"clientId": stack["clients"]["gate"]["client_id"]}, headers=headers, timeout=30
    ).json()
    account = httpx.get(f"{realm.admin_base}/clients/{clients[0]['id']}/service-account-user", headers=headers, timeout=30)
    mappings = httpx.get(f"{realm.admin_base}/users/{account.json()['id']}/role-mappings", headers=headers, timeout=30).json()
    assert {role["name"] for role in mappings["clientMappings"]["realm-management"]["mappings"]} == {"view-events"}
    wait_until_polling(stack["gate_url"])

