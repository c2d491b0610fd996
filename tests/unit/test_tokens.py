from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable

import httpx
import pytest
from cryptography.hazmat.primitives import serialization

from authz_service.tokens import SigningKeys, SigningKeysUnavailable, TokenError, TokenValidator

from .token_factory import AUDIENCE, ISSUER, JWKS_URL, Realm
from .fake_clock import Clock


@pytest.fixture
def realm() -> Realm:
    return Realm()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def validator(realm: Realm, clock: Clock) -> TokenValidator:
    http = httpx.AsyncClient(transport=httpx.MockTransport(realm.handle))
    return TokenValidator(SigningKeys(http, JWKS_URL, 30.0, clock), ISSUER, AUDIENCE)


def validate(validator: TokenValidator, token: str):
    return asyncio.run(validator.validate(token))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_valid_token_gives_identity(realm: Realm, validator: TokenValidator) -> None:
    identity = validate(validator, realm.token())
    assert identity.subject == "user-bob"
    assert identity.username == "bob"
    assert identity.email == "bob@example.org"
    assert identity.roles == {"Default", "offline_access"}
    assert identity.client == "mlflow-cli"


def test_ec_signed_token_is_accepted(realm: Realm, validator: TokenValidator) -> None:
    assert validate(validator, realm.token(kid="ec-1", algorithm="ES256")).username == "bob"


def test_authorized_party_stands_in_for_audience(realm: Realm, validator: TokenValidator) -> None:
    assert validate(validator, realm.token(aud="account", azp=AUDIENCE)).client == AUDIENCE


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # Times are computed when the test runs: collection may be many minutes earlier.
        (lambda now: {"exp": now - 60}, "expired"),
        (lambda now: {"nbf": now + 600}, "not yet valid"),
        (lambda now: {"iss": "http://evil.test/realms/mlflow"}, "another issuer"),
        (lambda now: {"iss": "http://keycloak.test/realms/master"}, "another issuer"),
        (lambda now: {"aud": "account", "azp": "some-other-app"}, "not issued for this gateway"),
        (lambda now: {"typ": "ID"}, "not an access token"),
        (lambda now: {"typ": "Refresh"}, "not an access token"),
        (lambda now: {"exp": None}, "exp"),
        (lambda now: {"sub": None}, "sub"),
    ],
)
def test_claims_that_do_not_fit_are_refused(
    realm: Realm, validator: TokenValidator, overrides: Callable[[int], dict], message: str
) -> None:
    with pytest.raises(TokenError, match=message):
        validate(validator, realm.token(**overrides(int(time.time()))))


def test_tampered_payload_fails_signature(realm: Realm, validator: TokenValidator) -> None:
    header, _, signature = realm.token().split(".")
    forged = b64(json.dumps(realm.claims(realm_access={"roles": ["Admin"]})).encode())
    with pytest.raises(TokenError, match="signature"):
        validate(validator, f"{header}.{forged}.{signature}")


def test_alg_none_is_refused(realm: Realm, validator: TokenValidator) -> None:
    header = b64(json.dumps({"alg": "none", "kid": "rsa-1", "typ": "JWT"}).encode())
    payload = b64(json.dumps(realm.claims()).encode())
    with pytest.raises(TokenError, match="not accepted"):
        validate(validator, f"{header}.{payload}.")


def test_hmac_signed_with_the_public_key_is_refused(realm: Realm, validator: TokenValidator) -> None:
    public_pem = realm.rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = ".".join(
        [
            b64(json.dumps({"alg": "HS256", "kid": "rsa-1"}).encode()),
            b64(json.dumps(realm.claims()).encode()),
        ]
    )
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    with pytest.raises(TokenError, match="not accepted"):
        validate(validator, f"{signing_input}.{b64(mac)}")


def test_algorithm_must_match_the_key(realm: Realm, validator: TokenValidator) -> None:
    with pytest.raises(TokenError, match="does not match"):
        validate(validator, realm.token(kid="rsa-1", algorithm="PS256"))


def test_encryption_key_is_not_a_signing_key(realm: Realm, validator: TokenValidator) -> None:
    with pytest.raises(TokenError, match="unknown key"):
        validate(validator, realm.token(kid="enc-1"))


def test_garbage_is_malformed(validator: TokenValidator) -> None:
    with pytest.raises(TokenError, match="malformed"):
        validate(validator, "not-a-jwt")


def test_keys_are_fetched_once_and_unknown_kids_refresh_at_most_once_per_interval(
    realm: Realm, validator: TokenValidator, clock: Clock
) -> None:
    for _ in range(5):
        validate(validator, realm.token())
    assert realm.jwks_requests == 1
    clock.now += 31
    for _ in range(5):
        with pytest.raises(TokenError, match="unknown key"):
            validate(validator, realm.token(kid="spoofed"))
    assert realm.jwks_requests == 2
    clock.now += 31
    with pytest.raises(TokenError, match="unknown key"):
        validate(validator, realm.token(kid="spoofed"))
    assert realm.jwks_requests == 3


def test_unreachable_jwks_is_not_a_token_problem(realm: Realm, clock: Clock) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    http = httpx.AsyncClient(transport=httpx.MockTransport(down))
    validator = TokenValidator(SigningKeys(http, JWKS_URL, 30.0, clock), ISSUER, AUDIENCE)
    with pytest.raises(SigningKeysUnavailable):
        validate(validator, realm.token())


def test_a_cached_token_does_not_vouch_for_a_tampered_copy(realm: Realm, validator: TokenValidator) -> None:
    token = realm.token()
    assert validate(validator, token).roles == {"Default", "offline_access"}
    header, _, signature = token.split(".")
    promoted = b64(json.dumps(realm.claims(realm_access={"roles": ["Admin"]})).encode())
    with pytest.raises(TokenError, match="signature"):
        validate(validator, f"{header}.{promoted}.{signature}")


def test_a_token_is_verified_once_and_again_after_a_minute(
    realm: Realm, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    http = httpx.AsyncClient(transport=httpx.MockTransport(realm.handle))
    validator = TokenValidator(SigningKeys(http, JWKS_URL, 30.0, clock), ISSUER, AUDIENCE, clock=clock)
    verified = validator._verified_claims
    calls: list[str] = []

    async def counting(token: str) -> dict:
        calls.append(token)
        return await verified(token)

    monkeypatch.setattr(validator, "_verified_claims", counting)
    clock.now = time.time()
    token = realm.token()
    for _ in range(3):
        validate(validator, token)
    assert len(calls) == 1
    clock.now += 61
    validate(validator, token)
    assert len(calls) == 2
    clock.now += 400
    validate(validator, token)
    assert len(calls) == 3


def test_remembered_tokens_are_bounded_and_the_oldest_is_verified_again(
    realm: Realm, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    http = httpx.AsyncClient(transport=httpx.MockTransport(realm.handle))
    validator = TokenValidator(
        SigningKeys(http, JWKS_URL, 30.0, clock), ISSUER, AUDIENCE, clock=clock, remember_at_most=3
    )
    verified = validator._verified_claims
    calls: list[str] = []

    async def counting(token: str) -> dict:
        calls.append(token)
        return await verified(token)

    monkeypatch.setattr(validator, "_verified_claims", counting)
    clock.now = time.time()
    tokens = [realm.token(sub=f"user-{number}") for number in range(4)]
    for token in tokens:
        validate(validator, token)
    validate(validator, tokens[3])
    assert calls == tokens
    validate(validator, tokens[0])
    assert calls == [*tokens, tokens[0]]
