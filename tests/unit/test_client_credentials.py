from __future__ import annotations

import base64
import hashlib
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from mlflow_gate_client.credentials import DEVICE_GRANT, Credentials, Realm, SignInError

from .fake_clock import Clock

REALM = Realm("http://keycloak.test/realms/mlflow")


class Reply:
    def __init__(self, status_code: int, body: dict[str, Any]) -> None:
        self.status_code = status_code
        self._body = body

    def json(self) -> dict[str, Any]:
        return self._body


class FakeRealm:
    """The token and device endpoints, with rotating refresh tokens and a scripted device poll."""

    def __init__(self, polls: list[str] | None = None) -> None:
        self.polls = list(polls or [])
        self.issued = 0
        self.valid_refresh = ""
        self.forms: list[dict[str, str]] = []
        self.challenge = ""

    def tokens(self) -> dict[str, Any]:
        self.issued += 1
        self.valid_refresh = f"refresh-{self.issued}"
        return {"access_token": f"access-{self.issued}", "refresh_token": self.valid_refresh,
                "expires_in": 300, "refresh_expires_in": 1800}

    def post(self, url: str, data: dict[str, str], timeout: float) -> Reply:
        self.forms.append(data)
        if url == REALM.device_endpoint:
            self.challenge = data["code_challenge"]
            assert data["code_challenge_method"] == "S256"
            return Reply(200, {"device_code": "dev", "user_code": "ABCD-EFGH", "interval": 5, "expires_in": 600,
                               "verification_uri": "http://keycloak.test/device",
                               "verification_uri_complete": "http://keycloak.test/device?user_code=ABCD-EFGH"})
        if data["grant_type"] == DEVICE_GRANT:
            digest = hashlib.sha256(data["code_verifier"].encode()).digest()
            assert base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == self.challenge
            outcome = self.polls.pop(0)
            return Reply(200, self.tokens()) if outcome == "ok" else Reply(400, {"error": outcome})
        if data["grant_type"] == "refresh_token":
            if data["refresh_token"] != self.valid_refresh:
                return Reply(400, {"error": "invalid_grant"})
            return Reply(200, self.tokens())
        return Reply(500, {})


def credentials(tmp_path: Path, realm: FakeRealm, clock: Clock, told: list[str] | None = None) -> Credentials:
    return Credentials(REALM, tmp_path / "creds.json", realm, clock, clock.sleep, (told if told is not None else []).append)


def test_device_sign_in_waits_for_confirmation_and_backs_off(tmp_path: Path) -> None:
    realm, clock, told = FakeRealm(["authorization_pending", "slow_down", "ok"]), Clock(), []
    assert credentials(tmp_path, realm, clock, told).access_token() == "access-1"
    assert clock.slept == [5, 5, 10]
    assert "ABCD-EFGH" in told[0] and "http://keycloak.test/device?user_code=ABCD-EFGH" in told[0]
    assert stat.S_IMODE((tmp_path / "creds.json").stat().st_mode) == 0o600


def test_stored_token_is_reused_then_refreshed_before_expiry(tmp_path: Path) -> None:
    realm, clock = FakeRealm(["ok"]), Clock()
    first = credentials(tmp_path, realm, clock)
    assert first.access_token() == "access-1"
    clock.now += 200
    assert credentials(tmp_path, realm, clock).access_token(interactive=False) == "access-1"
    clock.now += 80
    assert credentials(tmp_path, realm, clock).access_token(interactive=False) == "access-2"
    stored = json.loads((tmp_path / "creds.json").read_text())[f"{REALM.url} {REALM.client_id}"]
    assert stored["refresh_token"] == "refresh-2"


def test_refused_refresh_needs_a_new_sign_in(tmp_path: Path) -> None:
    realm, clock = FakeRealm(["ok"]), Clock()
    credentials(tmp_path, realm, clock).access_token()
    realm.valid_refresh = "revoked"
    clock.now += 400
    with pytest.raises(SignInError, match="not signed in"):
        credentials(tmp_path, realm, clock).access_token(interactive=False)


@pytest.mark.parametrize("outcome", ["access_denied", "expired_token"])
def test_denied_or_expired_device_sign_in_is_an_error(tmp_path: Path, outcome: str) -> None:
    with pytest.raises(SignInError, match=outcome):
        credentials(tmp_path, FakeRealm([outcome]), Clock()).access_token()


def test_unconfirmed_sign_in_gives_up_at_the_code_lifetime(tmp_path: Path) -> None:
    clock = Clock()
    with pytest.raises(SignInError, match="not confirmed in time"):
        credentials(tmp_path, FakeRealm(["authorization_pending"] * 200), clock).access_token()
    assert sum(clock.slept) == 600


def test_sign_out_forgets_the_tokens(tmp_path: Path) -> None:
    realm, clock = FakeRealm(["ok"]), Clock()
    creds = credentials(tmp_path, realm, clock)
    creds.access_token()
    creds.sign_out()
    with pytest.raises(SignInError):
        creds.access_token(interactive=False)
