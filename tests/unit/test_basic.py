"""Basic credentials: parsing, the grant each username gets, and the keyed, encrypted token cache."""

from __future__ import annotations

import asyncio
import base64
from urllib.parse import parse_qs

import httpx
import pytest

from authz_service.basic import (
    EXPIRY_MARGIN_SECONDS,
    BasicCredentials,
    BasicExchange,
    BasicRejected,
    KeyedDigests,
    MalformedBasic,
)
from authz_service.uma import KeycloakUnavailable

from .fake_clock import Clock

TOKEN_URL = "http://keycloak.test/realms/mlflow/protocol/openid-connect/token"
SECRET = "unit-test-exchange-secret-0123456789abcdef"


class TokenEndpoint:
    """Keycloak's token endpoint for one user (password grant via mlflow-cli) and one robot."""

    def __init__(self) -> None:
        self.forms: list[dict[str, str]] = []
        self.issued = 0
        self.up = True

    def handle(self, request: httpx.Request) -> httpx.Response:
        if not self.up:
            return httpx.Response(502)
        form = {key: values[0] for key, values in parse_qs(request.content.decode(), keep_blank_values=True).items()}
        self.forms.append(form)
        grant = form["grant_type"]
        if grant == "password" and form["client_id"] == "mlflow-cli" and (form["username"], form["password"]) == (
            "bob",
            "right password",
        ):
            return self._issue("bob")
        if grant == "client_credentials" and (form["client_id"], form["client_secret"]) == ("robot-ci", "robot secret"):
            return self._issue("robot-ci")
        if grant == "password":
            return httpx.Response(401, json={"error": "invalid_grant", "error_description": "Invalid user credentials"})
        return httpx.Response(401, json={"error": "unauthorized_client", "error_description": "Invalid client secret"})

    def _issue(self, who: str) -> httpx.Response:
        self.issued += 1
        return httpx.Response(200, json={"access_token": f"token-{who}-{self.issued}", "expires_in": 300})


class DictRedis:
    """get/set with expiry over a dict: enough to see what the exchange writes to Redis."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.data: dict[str, tuple[bytes, float]] = {}

    async def get(self, key: str) -> bytes | None:
        value = self.data.get(key)
        return value[0] if value and value[1] > self.clock.now else None

    async def set(self, key: str, value: bytes, px: int) -> None:
        self.data[key] = (value, self.clock.now + px / 1000)


def exchange(endpoint: TokenEndpoint, clock: Clock, redis: DictRedis | None = None, secret: str = SECRET) -> BasicExchange:
    http = httpx.AsyncClient(transport=httpx.MockTransport(endpoint.handle))
    return BasicExchange(http, TOKEN_URL, "mlflow-cli", "robot-", KeyedDigests(secret), redis, 100, clock)  # type: ignore[arg-type]


def encoded(username: str, password: str, encoding: str = "utf-8") -> str:
    return base64.b64encode(f"{username}:{password}".encode(encoding)).decode()


def test_parse_splits_at_the_first_colon_and_reads_utf8_and_latin1() -> None:
    assert BasicCredentials.parse(encoded("bob", "a:b:c")) == BasicCredentials("bob", "a:b:c")
    assert BasicCredentials.parse(encoded("jürgen", "pässword")) == BasicCredentials("jürgen", "pässword")
    assert BasicCredentials.parse(encoded("jürgen", "pässword", "latin-1")) == BasicCredentials("jürgen", "pässword")
    assert BasicCredentials.parse(encoded("bob", "")) == BasicCredentials("bob", "")


@pytest.mark.parametrize("header", ["not base64!", base64.b64encode(b"no colon").decode(), encoded("", "pw"), ""])
def test_parse_refuses_malformed_credentials(header: str) -> None:
    with pytest.raises(MalformedBasic):
        BasicCredentials.parse(header)


def test_users_get_the_password_grant_and_robots_client_credentials() -> None:
    endpoint = TokenEndpoint()
    basic = exchange(endpoint, Clock())

    async def scenario() -> None:
        assert await basic.access_token(BasicCredentials("bob", "right password")) == "token-bob-1"
        assert await basic.access_token(BasicCredentials("robot-ci", "robot secret")) == "token-robot-ci-2"

    asyncio.run(scenario())
    assert endpoint.forms[0] == {
        "grant_type": "password",
        "client_id": "mlflow-cli",
        "username": "bob",
        "password": "right password",
    }
    assert endpoint.forms[1] == {"grant_type": "client_credentials", "client_id": "robot-ci", "client_secret": "robot secret"}


def test_a_robot_id_with_a_users_password_is_never_tried_as_a_user() -> None:
    endpoint = TokenEndpoint()
    basic = exchange(endpoint, Clock())
    with pytest.raises(BasicRejected):
        asyncio.run(basic.access_token(BasicCredentials("robot-ci", "right password")))
    assert [form["grant_type"] for form in endpoint.forms] == ["client_credentials"]


def test_wrong_after_right_and_right_after_wrong_are_each_answered_by_keycloak() -> None:
    endpoint = TokenEndpoint()
    basic = exchange(endpoint, Clock())

    async def scenario() -> None:
        assert await basic.access_token(BasicCredentials("bob", "right password")) == "token-bob-1"
        with pytest.raises(BasicRejected):
            await basic.access_token(BasicCredentials("bob", "wrong password"))
        assert await basic.cached_token(BasicCredentials("bob", "wrong password")) is None
        assert await basic.access_token(BasicCredentials("bob", "right password")) == "token-bob-1"
        with pytest.raises(BasicRejected):
            await basic.access_token(BasicCredentials("bob", "right password "))

    asyncio.run(scenario())
    assert endpoint.issued == 1


def test_cached_token_is_dropped_before_it_expires() -> None:
    endpoint = TokenEndpoint()
    clock = Clock()
    basic = exchange(endpoint, clock)
    credentials = BasicCredentials("bob", "right password")
    assert asyncio.run(basic.access_token(credentials)) == "token-bob-1"
    clock.now += 300 - EXPIRY_MARGIN_SECONDS - 1
    assert asyncio.run(basic.access_token(credentials)) == "token-bob-1"
    clock.now += 1
    assert asyncio.run(basic.access_token(credentials)) == "token-bob-2"


def test_concurrent_requests_with_the_same_credentials_exchange_once() -> None:
    endpoint = TokenEndpoint()
    basic = exchange(endpoint, Clock())

    async def scenario() -> list[str]:
        return await asyncio.gather(*(basic.access_token(BasicCredentials("bob", "right password")) for _ in range(20)))

    assert set(asyncio.run(scenario())) == {"token-bob-1"}
    assert endpoint.issued == 1


def test_redis_holds_neither_password_nor_token_and_another_process_reads_the_entry() -> None:
    endpoint = TokenEndpoint()
    clock = Clock()
    redis = DictRedis(clock)
    credentials = BasicCredentials("bob", "right password")
    token = asyncio.run(exchange(endpoint, clock, redis).access_token(credentials))
    dump = b"".join(key.encode() + value for key, (value, _) in redis.data.items())
    for clear in (b"bob", b"right password", token.encode(), base64.b64encode(token.encode())):
        assert clear not in dump
    assert asyncio.run(exchange(endpoint, clock, redis).access_token(credentials)) == token
    assert endpoint.issued == 1
    assert asyncio.run(exchange(endpoint, clock, redis, secret=SECRET + "-other").cached_token(credentials)) is None


def test_a_tampered_redis_entry_is_a_miss_not_a_token() -> None:
    endpoint = TokenEndpoint()
    clock = Clock()
    redis = DictRedis(clock)
    credentials = BasicCredentials("bob", "right password")
    asyncio.run(exchange(endpoint, clock, redis).access_token(credentials))
    for key, (value, until) in redis.data.items():
        redis.data[key] = (value[:-1] + bytes([value[-1] ^ 1]), until)
    assert asyncio.run(exchange(endpoint, clock, redis).cached_token(credentials)) is None


def test_keycloak_errors_are_unavailable_not_rejections() -> None:
    endpoint = TokenEndpoint()
    endpoint.up = False
    with pytest.raises(KeycloakUnavailable):
        asyncio.run(exchange(endpoint, Clock()).access_token(BasicCredentials("bob", "right password")))


def test_every_exchange_is_counted_by_its_result() -> None:
    endpoint = TokenEndpoint()
    results: list[str] = []
    http = httpx.AsyncClient(transport=httpx.MockTransport(endpoint.handle))
    basic = BasicExchange(http, TOKEN_URL, "mlflow-cli", "robot-", KeyedDigests(SECRET), None, 100, Clock(), results.append)  # type: ignore[arg-type]

    async def scenario() -> None:
        await basic.access_token(BasicCredentials("bob", "right password"))
        await basic.access_token(BasicCredentials("bob", "right password"))  # cached: no exchange
        with pytest.raises(BasicRejected):
            await basic.access_token(BasicCredentials("bob", "wrong password"))
        endpoint.up = False
        with pytest.raises(KeycloakUnavailable):
            await basic.access_token(BasicCredentials("alice", "right password"))

    asyncio.run(scenario())
    assert results == ["ok", "rejected", "unavailable"]
