"""Client-credentials mode: a robot's token is asked for once, reused, and renewed before expiry."""

from __future__ import annotations

import pytest

from mlflow_gate_client.client_credentials import ClientCredentials
from mlflow_gate_client.realm import Realm, RealmUnavailable, SignInError

from .fake_clock import Clock
from .fake_realm import FakeRealm


def robot(realm: FakeRealm, clock: Clock, secret: str = "right-secret") -> ClientCredentials:
    return ClientCredentials(Realm(realm.url, "robot-ci"), secret, realm, clock)


def test_token_is_reused_until_shortly_before_expiry(tmp_path: object) -> None:
    realm, clock = FakeRealm(), Clock()
    ci = robot(realm, clock)
    first = ci.access_token()
    assert realm.grants("client_credentials") == [
        {"grant_type": "client_credentials", "client_secret": "right-secret", "client_id": "robot-ci"}
    ]
    clock.now += 269
    assert ci.access_token() == first
    clock.now += 2
    assert ci.access_token() != first
    assert len(realm.grants("client_credentials")) == 2


def test_wrong_secret_says_which_settings_to_check() -> None:
    with pytest.raises(SignInError, match="refused the client credentials of robot-ci.*MLFLOW_GATE_CLIENT_SECRET"):
        robot(FakeRealm(), Clock(), secret="wrong").access_token()


def test_an_outage_keeps_the_valid_token_then_fails_clearly() -> None:
    realm, clock = FakeRealm(), Clock()
    ci = robot(realm, clock)
    first = ci.access_token()
    realm.outage = True
    clock.now += 285
    assert ci.access_token() == first
    clock.now += 20
    with pytest.raises(RealmUnavailable):
        ci.access_token()
