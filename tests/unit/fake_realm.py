"""A stand-in for Keycloak's token, device and logout endpoints, for the client plugin's unit tests.

Refresh tokens rotate and work once, as in the realm (`revokeRefreshToken`, no reuse), so a test
notices when two processes refresh with the same one. `serve()` puts it behind a real local HTTP
server for code that makes its own `requests.Session`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def jwt(claims: dict[str, Any]) -> str:
    """An unsigned JWT-shaped token; the client only ever reads its claims."""
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256'})}.{part(claims)}.signature"


class Reply:
    def __init__(self, status_code: int, body: dict[str, Any]) -> None:
        self.status_code = status_code
        self._body = body

    def json(self) -> dict[str, Any]:
        return self._body


class FakeRealm:
    def __init__(self, url: str = "http://keycloak.test/realms/mlflow", polls: list[str] | None = None) -> None:
        self.url = url
        self.polls = list(polls or [])
        self.issued = 0
        self.valid_refresh = ""
        self.forms: list[dict[str, str]] = []
        self.challenge = ""
        self.robots = {"robot-ci": "right-secret"}
        self.lifetime = 300
        self.refresh_delay = 0.0  # seconds a refresh takes, to widen races
        self.outage = False  # answer 503 to token requests
        self.logged_out: list[str] = []
        self._lock = threading.Lock()

    def grants(self, grant_type: str) -> list[dict[str, str]]:
        return [form for form in self.forms if form.get("grant_type") == grant_type]

    def tokens(self, username: str, refresh: bool = True) -> dict[str, Any]:
        self.issued += 1
        claims = {"preferred_username": username, "sub": f"id-{username}", "email": f"{username}@example.org",
                  "realm_access": {"roles": ["Default", "offline_access"]}, "aud": "mlflow-gate"}
        body: dict[str, Any] = {"access_token": jwt({**claims, "n": self.issued}), "expires_in": self.lifetime}
        if refresh:
            self.valid_refresh = f"refresh-{self.issued}"
            body |= {"refresh_token": self.valid_refresh, "refresh_expires_in": 1800}
        return body

    def post(self, url: str, data: dict[str, str], timeout: float) -> Reply:
        self.forms.append(dict(data))
        if url == f"{self.url}/protocol/openid-connect/auth/device":
            self.challenge = data["code_challenge"]
            assert data["code_challenge_method"] == "S256"
            return Reply(200, {"device_code": "dev", "user_code": "ABCD-EFGH", "interval": 5, "expires_in": 600,
                               "verification_uri": "http://keycloak.test/device",
                               "verification_uri_complete": "http://keycloak.test/device?user_code=ABCD-EFGH"})
        if url == f"{self.url}/protocol/openid-connect/logout":
            self.logged_out.append(data["refresh_token"])
            return Reply(204, {})
        assert url == f"{self.url}/protocol/openid-connect/token", url
        if self.outage:
            return Reply(503, {})
        grant = data["grant_type"]
        if grant == DEVICE_GRANT:
            digest = hashlib.sha256(data["code_verifier"].encode()).digest()
            assert base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == self.challenge
            outcome = self.polls.pop(0)
            return Reply(200, self.tokens("bob")) if outcome == "ok" else Reply(400, {"error": outcome})
        if grant == "refresh_token":
            with self._lock:
                presented, current = data["refresh_token"], self.valid_refresh
                time.sleep(self.refresh_delay)
                if presented != current:
                    return Reply(400, {"error": "invalid_grant", "error_description": "Token is not active"})
                return Reply(200, self.tokens("bob"))
        if grant == "client_credentials":
            if self.robots.get(data["client_id"]) != data.get("client_secret"):
                return Reply(401, {"error": "unauthorized_client", "error_description": "Invalid client secret"})
            return Reply(200, self.tokens(f"service-account-{data['client_id']}", refresh=False))
        return Reply(400, {"error": "unsupported_grant_type"})


@contextmanager
def serve(realm: FakeRealm) -> Iterator[str]:
    """Run the fake realm on 127.0.0.1; yields its realm URL (and sets realm.url to it)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            length = int(self.headers.get("Content-Length", 0))
            form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
            reply = realm.post(f"http://{self.headers['Host']}{self.path}", form, timeout=0)
            payload = json.dumps(reply.json()).encode()
            self.send_response(reply.status_code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    realm.url = f"http://127.0.0.1:{server.server_port}/realms/mlflow"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield realm.url
    finally:
        server.shutdown()
        server.server_close()
