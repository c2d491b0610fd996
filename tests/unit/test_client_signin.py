"""The stored device-flow sign-in: device flow with PKCE, refresh before expiry, and the
cross-process refresh lock that keeps a rotating refresh token from being spent twice."""

from __future__ import annotations

import json
import stat
import threading
from pathlib import Path

import pytest

from mlflow_gate_client.realm import Realm, RealmUnavailable, SignInError, Tokens
from mlflow_gate_client.stored_signin import StoredSignIn
from mlflow_gate_client.token_store import TokenStore

from .fake_clock import Clock
from .fake_realm import FakeRealm


def signin(tmp_path: Path, realm: FakeRealm, clock: Clock, told: list[str] | None = None) -> StoredSignIn:
    """One process's view: its own object, the shared credentials file."""
    store = TokenStore(tmp_path / "creds.json")
    told = told if told is not None else []
    return StoredSignIn(Realm(realm.url, "mlflow-cli"), store, realm, clock, clock.sleep, told.append)


def signed_in(tmp_path: Path, realm: FakeRealm, clock: Clock) -> StoredSignIn:
    realm.polls.append("ok")
    first = signin(tmp_path, realm, clock)
    first.tokens(interactive=True)
    return first


def test_device_sign_in_waits_for_confirmation_and_backs_off(tmp_path: Path) -> None:
    realm, clock, told = FakeRealm(polls=["authorization_pending", "slow_down", "ok"]), Clock(), []
    tokens = signin(tmp_path, realm, clock, told).tokens(interactive=True)
    assert tokens.refresh_token == "refresh-1"
    assert clock.slept == [5, 5, 10]
    assert "ABCD-EFGH" in told[0] and "http://keycloak.test/device?user_code=ABCD-EFGH" in told[0]
    assert stat.S_IMODE((tmp_path / "creds.json").stat().st_mode) == 0o600


@pytest.mark.parametrize("outcome", ["access_denied", "expired_token"])
def test_denied_or_expired_device_sign_in_is_an_error(tmp_path: Path, outcome: str) -> None:
    with pytest.raises(SignInError, match=outcome):
        signin(tmp_path, FakeRealm(polls=[outcome]), Clock()).tokens(interactive=True)


def test_unconfirmed_sign_in_gives_up_at_the_code_lifetime(tmp_path: Path) -> None:
    clock = Clock()
    with pytest.raises(SignInError, match="not confirmed in time"):
        signin(tmp_path, FakeRealm(polls=["authorization_pending"] * 200), clock).tokens(interactive=True)
    assert sum(clock.slept) == 600


def test_stored_token_is_reused_then_refreshed_before_expiry(tmp_path: Path) -> None:
    realm, clock = FakeRealm(), Clock()
    first = signed_in(tmp_path, realm, clock).access_token()
    clock.now += 269  # 300 s token: refreshed once fewer than 30 s are left
    assert signin(tmp_path, realm, clock).access_token() == first
    clock.now += 2
    assert signin(tmp_path, realm, clock).access_token() != first
    assert len(realm.grants("refresh_token")) == 1
    stored = json.loads((tmp_path / "creds.json").read_text())[f"{realm.url} mlflow-cli"]
    assert stored["refresh_token"] == "refresh-2"


def test_short_tokens_are_refreshed_at_half_their_life(tmp_path: Path) -> None:
    realm, clock = FakeRealm(), Clock()
    realm.lifetime = 40
    signed_in(tmp_path, realm, clock)
    clock.now += 19
    signin(tmp_path, realm, clock).access_token()
    assert realm.grants("refresh_token") == []
    clock.now += 2
    signin(tmp_path, realm, clock).access_token()
    assert len(realm.grants("refresh_token")) == 1


def test_processes_sharing_a_sign_in_refresh_it_once(tmp_path: Path) -> None:
    """Eight holders race past the refresh time at once; only one spends the refresh token and the
    others take what it stored. Without the lock and the re-read, seven would present a spent token."""
    realm, clock = FakeRealm(), Clock()
    signed_in(tmp_path, realm, clock)
    clock.now += 290
    realm.refresh_delay = 0.05
    holders = [signin(tmp_path, realm, clock) for _ in range(8)]
    results: list[str] = []
    errors: list[Exception] = []
    start = threading.Barrier(len(holders))

    def use(holder: StoredSignIn) -> None:
        start.wait()
        try:
            results.append(holder.access_token())
        except Exception as error:  # noqa: BLE001 (collected for the assertion)
            errors.append(error)

    threads = [threading.Thread(target=use, args=(holder,)) for holder in holders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(realm.grants("refresh_token")) == 1
    assert len(set(results)) == 1 and len(results) == 8


def test_a_refused_refresh_needs_a_new_sign_in(tmp_path: Path) -> None:
    realm, clock = FakeRealm(), Clock()
    signed_in(tmp_path, realm, clock)
    realm.valid_refresh = "ended-by-the-admin"
    clock.now += 400
    with pytest.raises(SignInError, match="not signed in.*mlflow-gate-client login"):
        signin(tmp_path, realm, clock).access_token()


def test_a_realm_outage_during_an_early_refresh_keeps_the_valid_token(tmp_path: Path) -> None:
    realm, clock = FakeRealm(), Clock()
    current = signed_in(tmp_path, realm, clock).access_token()
    realm.outage = True
    clock.now += 285
    assert signin(tmp_path, realm, clock).access_token() == current
    clock.now += 20  # now past its expiry
    with pytest.raises(RealmUnavailable, match="HTTP 503"):
        signin(tmp_path, realm, clock).access_token()
    realm.outage = False
    assert signin(tmp_path, realm, clock).access_token() != current


def test_sign_out_ends_the_session_and_keeps_other_realms(tmp_path: Path) -> None:
    realm, clock = FakeRealm(), Clock()
    other = StoredSignIn(Realm("http://other.test/realms/x", "cli"), TokenStore(tmp_path / "creds.json"), realm, clock)
    with other.store.locked():
        other.store.write(other.key, Tokens("other-access", clock.now + 300, clock.now + 270, "other-refresh", None))
    holder = signed_in(tmp_path, realm, clock)
    assert holder.sign_out()
    assert realm.logged_out == ["refresh-1"]
    with pytest.raises(SignInError, match="not signed in"):
        holder.access_token()
    assert other.access_token() == "other-access"


def test_files_from_before_refresh_after_still_work(tmp_path: Path) -> None:
    realm, clock = FakeRealm(), Clock()
    (tmp_path / "creds.json").write_text(json.dumps({f"{realm.url} mlflow-cli": {
        "access_token": "old", "refresh_token": "r", "access_expires_at": clock.now + 100, "refresh_expires_at": clock.now + 900,
    }}))
    assert signin(tmp_path, realm, clock).access_token() == "old"
    assert signin(tmp_path, realm, clock).tokens().refresh_after == clock.now + 70
