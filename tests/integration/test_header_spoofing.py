"""Client-supplied identity and original-URI headers never influence a decision or reach MLflow.

Decisions: through the real NGINX, gate and Keycloak, bob's delete carrying headers that claim the
request is a read (X-Original-URI/-Method in every case, with underscores, duplicated, named in
`Connection`, and the X-Forwarded-Uri / X-Original-URL / X-Rewrite-URL / method-override cousins)
is still refused as a delete, and carol's read claiming to be alice the Admin is still refused as
carol's. Raw sockets send the headers byte for byte (see raw_http.py).

What reaches MLflow: MLflow echoes no headers, so a second NGINX, rendered from the same template
with the stack's renderer, sends its upstream traffic to a small recording HTTP server instead of
MLflow. The recorder stands in for MLflow only to observe the request NGINX forwards upstream;
the decision on that request is still made by the real gate and Keycloak of the running stack.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from stack.components import MLFLOW_HOST_HEADER

from .local_processes import gateway_nginx
from .raw_http import Header, RawResponse, address, json_request_headers, send
from .realm_client import RealmClient
from .test_mlflow_client import client_for, signed_in

pytestmark = pytest.mark.integration


CLIENT_IP = "127.0.0.2"
"""Requests to the recording gateway come from here, so a spoofed 127.0.0.1 is distinguishable."""

READ_URI = "/api/2.0/mlflow/experiments/get"
ORIGINAL_URI_SPOOFS: dict[str, list[Header]] = {
    "canonical": [("X-Original-URI", READ_URI), ("X-Original-Method", "GET")],
    "lower case": [("x-original-uri", READ_URI), ("x-original-method", "GET")],
    "upper case": [("X-ORIGINAL-URI", READ_URI), ("X-ORIGINAL-METHOD", "GET")],
    "mixed case": [("x-OrIgInAl-uRi", READ_URI), ("X-oRiGiNaL-mEtHoD", "GET")],
    "underscores": [("X_Original_URI", READ_URI), ("X_Original_Method", "GET")],
    "duplicated": [("X-Original-URI", READ_URI)] * 2 + [("X-Original-Method", "GET")] * 2,
    "named hop-by-hop": [("Connection", "X-Original-URI"), ("X-Original-URI", READ_URI), ("X-Original-Method", "GET")],
    "named hop-by-hop with close": [
        ("Connection", "close, X-Original-Method"),
        ("X-Original-URI", READ_URI),
        ("X-Original-Method", "GET"),
    ],
    "X-Forwarded-Uri": [("X-Forwarded-Uri", READ_URI), ("X-Forwarded-Method", "GET")],
    "X-Rewrite-URL": [("X-Rewrite-URL", READ_URI)],
    "X-Original-URL": [("X-Original-URL", READ_URI)],
    "method override": [("X-HTTP-Method-Override", "GET"), ("X-HTTP-Method", "GET"), ("X-Method-Override", "GET")],
}

IDENTITY_SPOOFS: dict[str, list[Header]] = {
    "canonical": [("X-Auth-Request-User", "alice"), ("X-Auth-Request-Roles", "Admin")],
    "lower case": [("x-auth-request-user", "alice"), ("x-auth-request-roles", "Admin")],
    "upper case": [("X-AUTH-REQUEST-USER", "alice"), ("X-AUTH-REQUEST-ROLES", "Admin")],
    "underscores": [("X_Auth_Request_User", "alice"), ("X_Auth_Request_Roles", "Admin")],
    "duplicated": [("X-Auth-Request-User", "alice")] * 2 + [("X-Auth-Request-Roles", "Admin")] * 2,
    "named hop-by-hop": [
        ("Connection", "X-Auth-Request-User, X-Auth-Request-Roles"),
        ("X-Auth-Request-User", "alice"),
        ("X-Auth-Request-Roles", "Admin"),
    ],
    "email and oauth2-proxy names": [
        ("X-Auth-Request-Email", "alice@example.org"),
        ("X-Auth-Request-Preferred-Username", "alice"),
        ("X-Auth-Request-Groups", "Admin"),
        ("X-Forwarded-User", "alice"),
    ],
}


@pytest.fixture(scope="module")
def realm(stack: dict[str, Any]) -> RealmClient:
    return RealmClient(stack)


def _json_body(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


def _experiment(stack: dict[str, Any], realm: RealmClient, label: str) -> str:
    with signed_in(realm.token("alice")):
        return client_for(stack).create_experiment(f"spoofing-{label}-{secrets.token_hex(4)}")


def _lifecycle(stack: dict[str, Any], realm: RealmClient, experiment_id: str) -> str:
    with signed_in(realm.token("alice")):
        return client_for(stack).get_experiment(experiment_id).lifecycle_stage


def in_default_workspace(stack: dict[str, Any]) -> str:
    """With workspaces on, refusals also name the workspace the request acted in."""
    return " in workspace default" if stack.get("workspaces") else ""


def _refusal_message(response: RawResponse) -> str:
    assert response.status == 403, (response.head, response.body)
    error = json.loads(response.body)
    assert error["error_code"] == "PERMISSION_DENIED"
    return str(error["message"])


def test_spoofed_original_uri_or_method_headers_do_not_turn_a_delete_into_a_read(
    stack: dict[str, Any], realm: RealmClient
) -> None:
    experiment_id = _experiment(stack, realm, "kept")
    server = address(stack["gateway_url"])
    body = _json_body({"experiment_id": experiment_id})
    headers = json_request_headers(f"{server[0]}:{server[1]}", realm.token("bob"), body)
    all_at_once = [header for spoofed in ORIGINAL_URI_SPOOFS.values() for header in spoofed]
    messages = {}
    for label, spoofed in {**ORIGINAL_URI_SPOOFS, "all at once": all_at_once}.items():
        response = send(server, "POST", "/api/2.0/mlflow/experiments/delete", [*headers, *spoofed], body)
        messages[label] = _refusal_message(response)
    # The gate named the permission of the real request line, not of any spoofed header.
    expected = f"Permission denied: user bob lacks permission experiments#delete{in_default_workspace(stack)}"
    assert set(messages.values()) == {expected}, messages
    assert _lifecycle(stack, realm, experiment_id) == "active"


def test_spoofed_original_uri_does_not_stop_an_admin_either(stack: dict[str, Any], realm: RealmClient) -> None:
    """The control: a spoof naming an unmapped route and method would be refused if the gate read
    it; alice's real delete goes through, so the gate decided on NGINX's own values."""
    experiment_id = _experiment(stack, realm, "control")
    server = address(stack["gateway_url"])
    body = _json_body({"experiment_id": experiment_id})
    headers = json_request_headers(f"{server[0]}:{server[1]}", realm.token("alice"), body)
    spoofed = [("X-Original-URI", "/no/such/route"), ("X-Original-Method", "TRACE"), ("X-HTTP-Method-Override", "GET")]
    response = send(server, "POST", "/api/2.0/mlflow/experiments/delete", [*headers, *spoofed], body)
    assert response.status == 200, (response.head, response.body)
    assert _lifecycle(stack, realm, experiment_id) == "deleted"


def test_spoofed_identity_headers_do_not_let_a_user_without_role_read(
    stack: dict[str, Any], realm: RealmClient
) -> None:
    server = address(stack["gateway_url"])
    headers = [("Host", f"{server[0]}:{server[1]}"), ("Authorization", f"Bearer {realm.token('carol')}")]
    all_at_once = [header for spoofed in IDENTITY_SPOOFS.values() for header in spoofed]
    messages = {}
    for label, spoofed in {**IDENTITY_SPOOFS, "all at once": all_at_once}.items():
        response = send(server, "GET", "/api/2.0/mlflow/experiments/search?max_results=1", [*headers, *spoofed])
        messages[label] = _refusal_message(response)
    expected = f"Permission denied: user carol lacks permission experiments#read{in_default_workspace(stack)}"
    assert set(messages.values()) == {expected}, messages


# ---------------------------------------------------------------------------------------------
# What NGINX forwards upstream, observed by a recorder in MLflow's place.


@dataclass(frozen=True)
class Seen:
    request_line: str
    headers: list[Header]

    def values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]


class Recorder(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _RecordingHandler)
        self.seen: list[Seen] = []


class _RecordingHandler(BaseHTTPRequestHandler):
    """Answers every request 200 with an empty experiment list and keeps its line and headers."""

    protocol_version = "HTTP/1.1"
    server: Recorder

    def _record(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append(Seen(self.requestline, list(self.headers.items())))
        body = b'{"experiments": []}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _record

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Quiet: pytest output is for test results."""


@dataclass
class RecordingGateway:
    server: tuple[str, int]
    recorder: Recorder

    def send(self, method: str, target: str, headers: list[Header]) -> tuple[RawResponse, Seen]:
        """One request from CLIENT_IP; returns the answer and the single upstream request it caused."""
        self.recorder.seen.clear()
        host = ("Host", f"{self.server[0]}:{self.server[1]}")
        response = send(self.server, method, target, [host, *headers], source_ip=CLIENT_IP)
        assert response.status == 200, (response.head, response.body)
        assert len(self.recorder.seen) == 1, self.recorder.seen
        return response, self.recorder.seen[0]


@pytest.fixture(scope="module")
def recording_gateway(stack: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RecordingGateway]:
    """A second NGINX from the product template: the real gate decides, the recorder is upstream."""
    recorder = Recorder()
    threading.Thread(target=recorder.serve_forever, daemon=True).start()
    gate_host, gate_port = address(stack["gate_url"])
    state = tmp_path_factory.mktemp("recording-nginx")
    try:
        with gateway_nginx(state, f"{gate_host}:{gate_port}", f"127.0.0.1:{recorder.server_port}") as port:
            yield RecordingGateway(("127.0.0.1", port), recorder)
    finally:
        recorder.shutdown()
        recorder.server_close()


def _claims(token: str) -> dict[str, Any]:
    """The token's payload, unverified: only to predict what the gate (which verifies) sends."""
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1&filter=name%20LIKE%20%27a%25%27&x=%2F..%2F&y=%zz"
"""An allowed read whose query NGINX must pass on byte for byte (encoded slash, bad escape)."""


def test_only_the_gates_identity_reaches_mlflow(recording_gateway: RecordingGateway, realm: RealmClient) -> None:
    token = realm.token("bob")
    claims = _claims(token)
    spoofed = [header for spoofs in IDENTITY_SPOOFS.values() for header in spoofs if header[0] != "Connection"]
    _, seen = recording_gateway.send(
        "GET",
        SEARCH,
        [
            ("Authorization", f"Bearer {token}"),
            ("Connection", "X-Auth-Request-User, X-Auth-Request-Roles, X-Auth-Request-Email"),
            *spoofed,
            ("X-HTTP-Method-Override", "DELETE"),
            ("x-http-method", "DELETE"),
            ("X-Method-Override", "DELETE"),
            ("X_HTTP_Method_Override", "DELETE"),
            ("X-Forwarded-For", "127.0.0.1"),
            ("X-Forwarded-For", "10.9.8.7"),
            ("X-Real-IP", "127.0.0.1"),
            ("X-Forwarded-Proto", "https"),
            ("X-Probe", "passes"),
        ],
    )
    assert seen.request_line == f"GET {SEARCH} HTTP/1.1"
    assert seen.values("X-Probe") == ["passes"], "the recorder must see ordinary client headers"
    assert seen.values("X-Auth-Request-User") == ["bob"]
    assert seen.values("X-Auth-Request-Roles") == [",".join(sorted(claims["realm_access"]["roles"]))]
    assert "Default" in seen.values("X-Auth-Request-Roles")[0].split(",")
    assert seen.values("X-Auth-Request-Email") == [claims["email"]]
    assert [name for name, _ in seen.headers if "_" in name] == []
    for name in ("X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override", "Authorization"):
        assert seen.values(name) == [], name
    assert seen.values("X-Forwarded-For") == [CLIENT_IP]
    assert seen.values("X-Real-IP") == [CLIENT_IP]
    assert seen.values("X-Forwarded-Proto") == ["http"]
    assert seen.values("Host") == [MLFLOW_HOST_HEADER]


def test_client_original_uri_and_other_identity_headers_do_not_reach_mlflow(
    recording_gateway: RecordingGateway, realm: RealmClient
) -> None:
    """Headers the gate's protocol or the oauth2-proxy convention give meaning to, which a component
    behind NGINX could one day trust, stay at the gateway."""
    spoofs = [
        *ORIGINAL_URI_SPOOFS["canonical"],
        ("X-Forwarded-Uri", READ_URI),
        ("X-Original-URL", READ_URI),
        ("X-Rewrite-URL", READ_URI),
        ("X-Auth-Request-Preferred-Username", "alice"),
        ("X-Auth-Request-Groups", "Admin"),
        ("X-Forwarded-User", "alice"),
        ("Cookie", "mlflow_gate_session=session-id-of-the-caller; KEYCLOAK_IDENTITY=abc"),
    ]
    _, seen = recording_gateway.send(
        "GET", SEARCH, [("Authorization", f"Bearer {realm.token('bob')}"), *spoofs, ("X-Probe", "passes")]
    )
    assert seen.values("X-Probe") == ["passes"], "the recorder must see ordinary client headers"
    reached = sorted({name for name, _ in spoofs if seen.values(name)})
    assert reached == [], f"client headers forwarded to MLflow: {reached}"
