from __future__ import annotations

import asyncio
import random
from urllib.parse import parse_qs

import httpx
import pytest

from authz_service.cache import DecisionCache
from authz_service.decisions import Authorizer
from authz_service.metrics import Metrics
from authz_service.revocation import Revocation
from authz_service.routes import Permission
from authz_service.tokens import Identity
from authz_service.uma import KeycloakUnavailable, TokenRejected, UmaClient

TOKEN_URL = "http://keycloak.test/realms/mlflow/protocol/openid-connect/token"
DELETE = Permission("experiments", "delete")
READ = Permission("experiments", "read")
GRANTS = {"alice-token": {"experiments#read", "experiments#delete"}, "bob-token": {"experiments#read"}}


class FakeKeycloak:
    """Answers UMA decision requests from a grant table and records what it was asked."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.requests: list[dict[str, list[str]]] = []

    async def handle(self, request: httpx.Request) -> httpx.Response:
        form = parse_qs(request.content.decode())
        self.requests.append(form)
        await asyncio.sleep(self.delay * random.random())
        token = request.headers["authorization"].removeprefix("Bearer ")
        if form["permission"][0] in GRANTS.get(token, set()):
            return httpx.Response(200, json={"result": True})
        return httpx.Response(403, json={"error": "access_denied", "error_description": "not_authorized"})


def identity(name: str, roles: set[str]) -> Identity:
    return Identity(name, name, None, frozenset(roles), "mlflow-cli", 4_000_000_000.0, f"{name}-token")


ALICE = identity("alice", {"Admin"})
BOB = identity("bob", {"Default"})


def authorizer_for(handler) -> tuple[Authorizer, UmaClient]:
    uma = UmaClient(httpx.AsyncClient(transport=httpx.MockTransport(handler)), TOKEN_URL, "mlflow-gate")
    return Authorizer(DecisionCache(max_ttl=60, size=1000), uma, Revocation(None, 2, 10, 60, Metrics())), uma


def test_asks_for_exactly_one_permission_in_decision_mode_with_the_users_token() -> None:
    keycloak = FakeKeycloak()
    authorizer, _ = authorizer_for(keycloak.handle)
    assert asyncio.run(authorizer.is_allowed(BOB, DELETE)) is False
    assert keycloak.requests == [
        {
            "grant_type": ["urn:ietf:params:oauth:grant-type:uma-ticket"],
            "audience": ["mlflow-gate"],
            "permission": ["experiments#delete"],
            "response_mode": ["decision"],
        }
    ]


def test_repeated_question_costs_one_keycloak_call() -> None:
    keycloak = FakeKeycloak()
    authorizer, uma = authorizer_for(keycloak.handle)

    async def repeat() -> list[bool]:
        return [await authorizer.is_allowed(BOB, READ) for _ in range(50)]

    assert asyncio.run(repeat()) == [True] * 50
    assert uma.request_count == 1
    assert authorizer.cache_hits == 49


def test_concurrent_identical_questions_share_one_call() -> None:
    keycloak = FakeKeycloak(delay=0.05)
    authorizer, uma = authorizer_for(keycloak.handle)

    async def burst() -> list[bool]:
        return await asyncio.gather(*(authorizer.is_allowed(ALICE, DELETE) for _ in range(40)))

    assert asyncio.run(burst()) == [True] * 40
    assert uma.request_count == 1


def test_two_users_hammering_concurrently_get_only_their_own_decisions() -> None:
    keycloak = FakeKeycloak(delay=0.01)
    authorizer, _ = authorizer_for(keycloak.handle)
    callers = [ALICE, BOB] * 200
    random.Random(7).shuffle(callers)

    async def hammer() -> list[bool]:
        return await asyncio.gather(*(authorizer.is_allowed(caller, DELETE) for caller in callers))

    results = asyncio.run(hammer())
    assert [allowed for caller, allowed in zip(callers, results) if caller is ALICE] == [True] * 200
    assert [allowed for caller, allowed in zip(callers, results) if caller is BOB] == [False] * 200


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (httpx.Response(200, json={"result": True}), True),
        (httpx.Response(200, json={"result": False}), False),
        (httpx.Response(200, json={"result": "true"}), False),
        (httpx.Response(403, json={"error": "access_denied"}), False),
        (httpx.Response(400, json={"error": "invalid_resource"}), False),
        (httpx.Response(400, json={"error": "invalid_scope"}), False),
    ],
)
def test_keycloak_answers_are_read_strictly(response: httpx.Response, expected: bool) -> None:
    authorizer, _ = authorizer_for(lambda request: response)
    assert asyncio.run(authorizer.is_allowed(BOB, DELETE)) is expected


@pytest.mark.parametrize(
    ("handler", "error"),
    [
        (lambda request: httpx.Response(401, json={"error": "invalid_grant"}), TokenRejected),
        (lambda request: httpx.Response(500, json={"error": "server_error"}), KeycloakUnavailable),
        (lambda request: httpx.Response(400, json={"error": "invalid_request"}), KeycloakUnavailable),
        (lambda request: httpx.Response(200, text="<html>"), KeycloakUnavailable),
    ],
)
def test_keycloak_failures_are_never_an_allow_and_are_not_cached(handler, error) -> None:
    authorizer, uma = authorizer_for(handler)
    for _ in range(2):
        with pytest.raises(error):
            asyncio.run(authorizer.is_allowed(BOB, DELETE))
    assert uma.request_count == 2


def test_unreachable_keycloak_fails_closed() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    authorizer, _ = authorizer_for(refuse)
    with pytest.raises(KeycloakUnavailable, match="unreachable"):
        asyncio.run(authorizer.is_allowed(ALICE, DELETE))
