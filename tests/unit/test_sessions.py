from __future__ import annotations

import asyncio

from authz_service.oidc import GrantRejected, TokenSet
from authz_service.sessions import KeyValue, SessionStore, SigninState

from .fake_clock import Clock


class RotatingKeycloak:
    """Refresh tokens are single-use, as with Keycloak's 'revoke refresh token' setting."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.valid_refresh_token = "refresh-0"
        self.refreshes = 0

    def tokens(self) -> TokenSet:
        return TokenSet(
            access_token=f"access-{self.refreshes}",
            refresh_token=self.valid_refresh_token,
            id_token="id-token",
            access_expires_at=self.clock.now + 60,
            refresh_expires_at=self.clock.now + 1800,
        )

    async def refresh(self, refresh_token: str, now: float) -> TokenSet:
        await asyncio.sleep(0.01)
        if refresh_token != self.valid_refresh_token:
            raise GrantRejected("Stale token")
        self.refreshes += 1
        self.valid_refresh_token = f"refresh-{self.refreshes}"
        return TokenSet(**{**self.tokens().__dict__, "id_token": None})


def store(clock: Clock) -> tuple[SessionStore, RotatingKeycloak]:
    keycloak = RotatingKeycloak(clock)
    return SessionStore(KeyValue(None, clock), keycloak, lifetime=3600, clock=clock), keycloak  # type: ignore[arg-type]


def test_concurrent_requests_refresh_once_and_all_get_the_new_token() -> None:
    clock = Clock(50_000.0)
    sessions, keycloak = store(clock)

    async def scenario() -> list[str | None]:
        session_id = await sessions.create(keycloak.tokens())
        assert await sessions.access_token(session_id) == "access-0"
        clock.now += 50
        return await asyncio.gather(*(sessions.access_token(session_id) for _ in range(25)))

    assert asyncio.run(scenario()) == ["access-1"] * 25
    assert keycloak.refreshes == 1
    assert sessions.refresh_count == 1


def test_session_survives_many_token_lifetimes() -> None:
    clock = Clock(50_000.0)
    sessions, keycloak = store(clock)

    async def scenario() -> list[str | None]:
        session_id = await sessions.create(keycloak.tokens())
        seen = []
        for _ in range(5):
            clock.now += 70
            seen.append(await sessions.access_token(session_id))
        return seen

    assert asyncio.run(scenario()) == [f"access-{n}" for n in range(1, 6)]


def test_rejected_refresh_ends_the_session() -> None:
    clock = Clock(50_000.0)
    sessions, keycloak = store(clock)

    async def scenario() -> tuple[str | None, str | None]:
        session_id = await sessions.create(keycloak.tokens())
        keycloak.valid_refresh_token = "revoked-elsewhere"
        clock.now += 50
        return await sessions.access_token(session_id), await sessions.access_token(session_id)

    assert asyncio.run(scenario()) == (None, None)


def test_session_ends_at_its_lifetime_even_with_refresh() -> None:
    clock = Clock(50_000.0)
    keycloak = RotatingKeycloak(clock)
    sessions = SessionStore(KeyValue(None, clock), keycloak, lifetime=100, clock=clock)  # type: ignore[arg-type]

    async def scenario() -> str | None:
        session_id = await sessions.create(keycloak.tokens())
        clock.now += 101
        return await sessions.access_token(session_id)

    assert asyncio.run(scenario()) is None


def test_every_sign_in_gets_a_new_unguessable_id() -> None:
    clock = Clock(50_000.0)
    sessions, keycloak = store(clock)

    async def scenario() -> set[str]:
        return {await sessions.create(keycloak.tokens()) for _ in range(20)}

    ids = asyncio.run(scenario())
    assert len(ids) == 20
    assert all(len(session_id) >= 40 for session_id in ids)


def test_signin_state_is_single_use_and_expires() -> None:
    clock = Clock(50_000.0)
    sessions, _ = store(clock)

    async def scenario() -> tuple[object, object, object]:
        state = await sessions.begin_signin(SigninState("verifier", "nonce", "/"))
        first = await sessions.finish_signin(state)
        replay = await sessions.finish_signin(state)
        late = await sessions.begin_signin(SigninState("verifier", "nonce", "/"))
        clock.now += 601
        return first, replay, await sessions.finish_signin(late)

    first, replay, late = asyncio.run(scenario())
    assert first == SigninState("verifier", "nonce", "/")
    assert replay is None
    assert late is None


def test_sign_out_removes_the_session() -> None:
    clock = Clock(50_000.0)
    sessions, keycloak = store(clock)

    async def scenario() -> tuple[object, str | None]:
        session_id = await sessions.create(keycloak.tokens())
        ended = await sessions.end(session_id)
        return ended, await sessions.access_token(session_id)

    ended, token = asyncio.run(scenario())
    assert ended is not None and token is None
