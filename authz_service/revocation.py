"""Rights changes reach every gate process within seconds, instead of at the user's next token.

A cached decision was right when Keycloak made it. Each gate process polls the realm's admin events
(role mappings, group memberships, disabled or deleted users, admin sign-outs, role and policy
edits) and user events (sign-outs) and remembers, per user and for the realm as a whole, when the
last change happened. A cached decision made before that moment is not used: Keycloak is asked
again, and its role policies read the user's current roles (`fetchRoles`), so the answer follows
the change even for a token issued before it.

Every process polls for itself, so correctness never depends on Redis carrying a message; a
decision another process cached in Redis carries the time it was decided and is judged by the
same rule. If the events cannot be read, cached decisions older than the delay budget are not
trusted, so a change still takes effect within the budget (by asking Keycloak).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from keycloak import KeycloakAdmin
from keycloak.exceptions import KeycloakConnectionError, KeycloakError, KeycloakOperationError

from .metrics import Metrics

log = logging.getLogger(__name__)

# Keycloak stamps an event just before its transaction commits, with its own clock; decisions are
# stamped with the gate's. A change that can take rights away also voids decisions stamped this soon
# after it, so a decision racing the commit, or clocks a little apart, cannot keep a revoked right.
CLOCK_MARGIN_SECONDS = 1.0
# Each poll re-reads this much before the newest event already seen: an event stamped before its
# transaction committed is not missed. Re-reading is harmless (a change time only moves forward).
OVERLAP_SECONDS = 5.0
PAGE_SIZE = 200
# More pages than this in one poll (a bulk import) is treated as a change to the whole realm.
MAX_PAGES = 25

# User events that end a user's sessions or access. Admin events need no list: see admin_change.
USER_EVENT_TYPES = ("LOGOUT", "DELETE_ACCOUNT", "USER_DISABLED_BY_PERMANENT_LOCKOUT")

# Admin event resource types that cannot change what anyone may do in MLflow. Anything else that
# is not about one user (roles, groups, clients, policies, the realm itself) voids every decision.
_NEUTRAL_RESOURCE_TYPES = frozenset(
    {
        "AUTH_FLOW",
        "AUTH_EXECUTION",
        "AUTH_EXECUTION_FLOW",
        "AUTHENTICATOR_CONFIG",
        "REQUIRED_ACTION",
        "REQUIRED_ACTION_CONFIG",
        "CLIENT_INITIAL_ACCESS_MODEL",
        "USER_LOGIN_FAILURE",
        "CLUSTER_NODE",
    }
)
_USER_PATH = re.compile(r"^users/([^/]+)(?:/|$)")


class EventsUnavailable(Exception):
    """Keycloak's event API could not be read (down, or the gate lacks `view-events`)."""


@dataclass(frozen=True)
class RightsChange:
    """One user's rights (or everyone's: `subject` None) changed; decisions made before `at` are void.

    `at` is in seconds since the epoch on Keycloak's clock, margin included.
    """

    subject: str | None
    at: float


@dataclass(frozen=True)
class NotBefore:
    """Cached decisions made before these times are not used.

    `own` judges the decisions this process made (stamped with its own clock, so a decision it
    started after it read the change is never void); `shared` judges those read from Redis, made
    by other processes, against Keycloak's time of the change plus the margin.
    """

    own: float
    shared: float


ALWAYS = NotBefore(0.0, 0.0)


def admin_change(event: dict[str, Any]) -> RightsChange | None:
    """What an admin event means for decisions; None when it cannot change any.

    Anything under `users/<id>` (role mappings, group membership, disable, delete, sign-out)
    concerns that user alone. A new client (a robot) takes nothing from anyone; its service
    account's roles arrive as a user's role mapping. Creations add (a user, a role mapping, a
    group membership), so they get no margin: a new user's first decisions stay cached.
    """
    at = float(event.get("time", 0)) / 1000
    if event.get("operationType") != "CREATE":
        at += CLOCK_MARGIN_SECONDS
    path = str(event.get("resourcePath") or "")
    match = _USER_PATH.match(path)
    if match:
        return RightsChange(match.group(1), at)
    resource_type = event.get("resourceType")
    if resource_type in _NEUTRAL_RESOURCE_TYPES:
        return None
    if resource_type == "CLIENT" and event.get("operationType") == "CREATE":
        return None
    return RightsChange(None, at)


def user_change(event: dict[str, Any]) -> RightsChange | None:
    """A user event that ends the user's sessions or access; None for any other event."""
    if event.get("type") not in USER_EVENT_TYPES or not event.get("userId"):
        return None
    return RightsChange(str(event["userId"]), float(event.get("time", 0)) / 1000 + CLOCK_MARGIN_SECONDS)


def _event_id(event: dict[str, Any]) -> str:
    """Keycloak's event id; older servers without one are told apart by what the event says."""
    return str(event.get("id") or (event.get("time"), event.get("resourcePath"), event.get("type"), event.get("userId")))


class EventsSource(Protocol):
    """Where events come from: Keycloak's admin API here, an in-process fake in unit tests."""

    async def admin_events(self, since_ms: int, first: int, limit: int) -> list[dict[str, Any]]: ...

    async def user_events(self, since_ms: int, first: int, limit: int) -> list[dict[str, Any]]: ...

    async def close(self) -> None: ...


class KeycloakEvents:
    """The realm's event API, read with the gate's own service account through python-keycloak.

    The account needs `realm-management` role `view-events` and nothing else.
    """

    def __init__(
        self,
        keycloak_url: str,
        realm: str,
        client_id: str,
        client_secret: str,
        verify: str | bool,
        timeout: float,
        metrics: Metrics,
    ) -> None:
        self._metrics = metrics
        self._admin = KeycloakAdmin(
            # python-keycloak joins relative paths onto this URL: the slash keeps a path prefix (/auth).
            server_url=keycloak_url + "/",
            realm_name=realm,
            user_realm_name=realm,
            client_id=client_id,
            client_secret_key=client_secret,
            verify=verify,
            timeout=timeout,  # type: ignore[arg-type]  # httpx takes fractions of a second
        )

    async def admin_events(self, since_ms: int, first: int, limit: int) -> list[dict[str, Any]]:
        query = {"dateFrom": since_ms, "first": first, "max": limit}
        return await self._read(self._admin.a_get_admin_events(query))

    async def user_events(self, since_ms: int, first: int, limit: int) -> list[dict[str, Any]]:
        query = {"dateFrom": since_ms, "first": first, "max": limit, "type": list(USER_EVENT_TYPES)}
        return await self._read(self._admin.a_get_events(query))

    async def close(self) -> None:
        await self._admin.connection.aclose()

    async def _read(self, call: Awaitable[list[dict[str, Any]]]) -> list[dict[str, Any]]:
        """One event query, timed and counted like the gate's other Keycloak calls."""
        started = time.perf_counter()
        try:
            return await call
        except (KeycloakError, TypeError) as error:
            self._metrics.keycloak_errors.labels("events", _error_kind(error)).inc()
            raise EventsUnavailable(f"{type(error).__name__}: {error}") from error
        finally:
            self._metrics.keycloak_seconds.labels("events").observe(time.perf_counter() - started)


def _error_kind(error: Exception) -> str:
    if isinstance(error, KeycloakConnectionError):
        return "network"
    if isinstance(error, KeycloakOperationError) and (error.response_code or 0) >= 500:
        return "status_5xx"
    return "refused"


@dataclass(frozen=True)
class RevocationState:
    """What readiness and metrics report about the poller."""

    enabled: bool
    healthy: bool
    last_success: float | None
    consecutive_failures: int
    last_error: str | None


class Revocation:
    """Per-user and realm-wide "changed at" times, kept current by polling Keycloak's events.

    `not_before` is on every request's path: a dict lookup and a few comparisons.
    """

    def __init__(
        self,
        source: EventsSource | None,
        poll_interval: float,
        max_delay: float,
        lookback: float,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """`lookback`: how far back the first poll reads, the age of the oldest decision any cache may hold."""
        self._source = source
        self._metrics = metrics
        self._poll_interval = poll_interval
        self._max_delay = max_delay
        self._clock = clock
        self._sleep = sleep
        self._lookback = lookback
        self._since = clock() - lookback
        self._users: dict[str, NotBefore] = {}
        self._realm = ALWAYS
        self._seen: dict[str, float] = {}
        self._known_until: float | None = None
        self._last_error: str | None = None
        self._failures = 0

    @property
    def enabled(self) -> bool:
        return self._source is not None

    @property
    def healthy(self) -> bool:
        """Off counts as healthy (nothing to wait for); on, the events are at most `max_delay` old."""
        if self._source is None:
            return True
        return self._known_until is not None and self._clock() - self._known_until <= self._max_delay

    @property
    def last_success(self) -> float | None:
        """When the last successful poll started (seconds since the epoch), None before the first."""
        return self._known_until

    def state(self) -> RevocationState:
        return RevocationState(self.enabled, self.healthy, self._known_until, self._failures, self._last_error)

    def not_before(self, subject: str) -> NotBefore:
        """Cached decisions for `subject` made before these times must not be used."""
        known = self.known_changes(subject)
        now = self._clock()
        if self._source is not None and (self._known_until is None or now - self._known_until > self._max_delay):
            # Changes since the last successful poll are unknown: trust only decisions young enough
            # that any change they missed is still within the budget.
            return NotBefore(max(known.own, now - self._max_delay), max(known.shared, now - self._max_delay))
        return known

    def known_changes(self, subject: str) -> NotBefore:
        """The changes to `subject` (or the realm) this process has read, however long ago it last could."""
        if self._source is None:
            return ALWAYS
        user = self._users.get(subject, ALWAYS)
        return NotBefore(max(user.own, self._realm.own), max(user.shared, self._realm.shared))

    def record(self, changes: Iterable[RightsChange], read_at: float) -> None:
        """Move the change times forward; `read_at` is when this process read the changes."""
        for change in changes:
            void = NotBefore(min(change.at, read_at), change.at)
            if change.subject is None:
                self._realm = _later(self._realm, void)
                self._metrics.revocation_changes.labels("realm").inc()
            else:
                self._users[change.subject] = _later(self._users.get(change.subject, ALWAYS), void)
                self._metrics.revocation_changes.labels("user").inc()

    async def poll(self) -> None:
        """Read the events since the last poll and record the changes; never raises EventsUnavailable."""
        if self._source is None:
            return
        started = self._clock()
        try:
            (admin, admin_complete), (user, user_complete) = await asyncio.gather(
                self._read_all(self._source.admin_events), self._read_all(self._source.user_events)
            )
        except EventsUnavailable as error:
            self._metrics.revocation_polls.labels("failed").inc()
            self._failures += 1
            if self._last_error is None:
                log.warning("revocation: cannot read Keycloak events, still deciding through Keycloak: %s", error)
            self._last_error = str(error)
            return
        read_at = self._clock()
        new_admin = [event for event in admin if _event_id(event) not in self._seen]
        new_user = [event for event in user if _event_id(event) not in self._seen]
        self.record((change for change in map(admin_change, new_admin) if change is not None), read_at)
        self.record((change for change in map(user_change, new_user) if change is not None), read_at)
        if not (admin_complete and user_complete):
            log.warning("revocation: over %d events in one poll; treating it as a realm-wide change", PAGE_SIZE * MAX_PAGES)
            self.record([RightsChange(None, read_at + CLOCK_MARGIN_SECONDS)], read_at)
        for event in [*new_admin, *new_user]:
            self._seen[_event_id(event)] = float(event.get("time", 0)) / 1000
        newest = max((float(event.get("time", 0)) / 1000 for event in [*admin, *user]), default=0.0)
        self._since = max(self._since, newest - OVERLAP_SECONDS)
        if self._last_error is not None:
            log.info("revocation: reading Keycloak events again after %d failed polls", self._failures)
        self._metrics.revocation_polls.labels("ok").inc()
        self._known_until = started
        self._failures = 0
        self._last_error = None
        self._forget(started - self._lookback - CLOCK_MARGIN_SECONDS)

    async def run(self) -> None:
        """Poll forever, one poll starting every interval; cancelled at shutdown.

        A slow poll shortens the pause after it, so a slow Keycloak does not stretch the delay.
        A bug in one poll must not end the polling.
        """
        while True:
            started = self._clock()
            try:
                await self.poll()
            except Exception:
                self._metrics.revocation_polls.labels("failed").inc()
                log.exception("revocation: poll failed")
            await self._sleep(max(0.0, self._poll_interval - (self._clock() - started)))

    async def close(self) -> None:
        if self._source is not None:
            await self._source.close()

    async def _read_all(
        self, read: Callable[[int, int, int], Awaitable[list[dict[str, Any]]]]
    ) -> tuple[list[dict[str, Any]], bool]:
        """The events since the watermark, page by page, and whether that was all of them."""
        since_ms = int(self._since * 1000)
        events: list[dict[str, Any]] = []
        for page in range(MAX_PAGES):
            batch = await read(since_ms, page * PAGE_SIZE, PAGE_SIZE)
            events += batch
            if len(batch) < PAGE_SIZE:
                return events, True
        return events, False

    def _forget(self, before: float) -> None:
        """Drop change times older than any cached decision can be, and ids no poll can read again."""
        for subject in [subject for subject, void in self._users.items() if void.shared < before]:
            del self._users[subject]
        for event_id in [event_id for event_id, at in self._seen.items() if at < self._since - 1]:
            del self._seen[event_id]


def _later(current: NotBefore, change: NotBefore) -> NotBefore:
    return NotBefore(max(current.own, change.own), max(current.shared, change.shared))
