"""NGINX's opt-in micro-cache of the gate's answers, through a second NGINX on the real gate.

The upstream behind that NGINX echoes the identity NGINX hands it, so a test sees whose answer a
request was served with; the gate's own counters show which requests reached it.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from stack.nginx import auth_cache_values

from .local_processes import gateway_nginx
from .realm_client import RealmClient, gate_counter

pytestmark = pytest.mark.integration

GET_EXPERIMENT = "/api/2.0/mlflow/experiments/get?experiment_id=0"
DELETE_EXPERIMENT = "/api/2.0/mlflow/experiments/delete"


class EchoIdentity(BaseHTTPRequestHandler):
    """Answers every request with the user NGINX passed upstream (X-Auth-Request-User)."""

    def _answer(self) -> None:
        body = (self.headers.get("X-Auth-Request-User") or "").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def cached_gateway(stack: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    echo = ThreadingHTTPServer(("127.0.0.1", 0), EchoIdentity)
    threading.Thread(target=echo.serve_forever, daemon=True).start()
    state: Path = tmp_path_factory.mktemp("micro-cache-nginx")
    # NGINX workers started by root run as nobody: their cache directory must be reachable for them,
    # which pytest's private temporary directory is not.
    cache_dir = Path(tempfile.mkdtemp(prefix="mlflow-gate-auth-cache-"))
    cache_dir.chmod(0o755)
    gate = stack["gate_url"].removeprefix("http://")
    try:
        with gateway_nginx(state, gate, f"127.0.0.1:{echo.server_port}", auth_cache_values(cache_dir, 30)) as port:
            yield f"http://127.0.0.1:{port}"
    finally:
        echo.shutdown()
        shutil.rmtree(cache_dir, ignore_errors=True)


def gate_checks(stack: dict[str, Any], outcome: str) -> float:
    return gate_counter(stack, "gate_checks_total", outcome=outcome)


def test_answers_are_reused_per_credential_and_never_across_users(
    stack: dict[str, Any], cached_gateway: str
) -> None:
    realm = RealmClient(stack)
    alice = {"Authorization": f"Bearer {realm.token('alice')}"}
    bob = {"Authorization": f"Bearer {realm.token('bob')}"}
    allowed_before = gate_checks(stack, "allowed")
    denied_before = gate_checks(stack, "denied")

    for _ in range(3):
        assert httpx.get(cached_gateway + GET_EXPERIMENT, headers=alice).text == "alice"
        assert httpx.get(cached_gateway + GET_EXPERIMENT, headers=bob).text == "bob"
        assert httpx.post(cached_gateway + DELETE_EXPERIMENT, headers=alice).text == "alice"
        assert httpx.post(cached_gateway + DELETE_EXPERIMENT, headers=bob).status_code == 403

    # Four distinct questions reached the gate once each; the repeats were NGINX's.
    assert gate_checks(stack, "allowed") - allowed_before == 3
    assert gate_checks(stack, "denied") - denied_before == 1
    # Other cookies with the same token make another credential: the gate is asked again.
    assert httpx.post(cached_gateway + DELETE_EXPERIMENT, headers={**bob, "Cookie": "x=1"}).status_code == 403
    assert gate_checks(stack, "denied") - denied_before == 2


def test_a_401_is_never_cached(stack: dict[str, Any], cached_gateway: str) -> None:
    unauthenticated_before = gate_checks(stack, "unauthenticated")
    for _ in range(3):
        response = httpx.get(cached_gateway + GET_EXPERIMENT, headers={"Authorization": "Bearer not-a-token"})
        assert response.status_code == 401
    assert gate_checks(stack, "unauthenticated") - unauthenticated_before == 3
