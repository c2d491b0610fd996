"""A reusable mixed load through the gateway that proves no door opened and no acknowledged write was lost.

Several users send a mix of requests the realm allows and forbids: alice (Admin) reads, writes and
deletes; bob (Default) reads and writes, and his deletes are forbidden; carol (no role) is refused
everything; anonymous callers get 401; bob also browses with a signed-in session cookie. Every
response is recorded. Afterwards `LoadResult.verify()` reads every acknowledged write back from
MLflow and checks the canary experiment that forbidden requests aimed at.

Use it from a test that has the `stack` fixture (or any dict with the same keys):

    load = MixedLoad.prepare(stack)                 # users' tokens, bob's session, targets
    with load.running(total=10_000) as progress:    # in a background thread
        ...  # break something; progress.done tells how many responses so far
    result = progress.result()                      # waits for the end
    print(result.summary())
    result.verify()                                 # raises AssertionError naming what went wrong

or blocking: `result = load.run(total=2_000)`. `prepare(stack, spread_over=[url, url])` sends the
requests to several gateways in turn (NGINX replicas); each record names the one it went to. It adapts to MLflow's capacity: `mlflow_concurrency`
workers send the allowed requests (which reach MLflow, so go at MLflow's pace), the remaining
workers of `concurrency` send forbidden ones (answered by NGINX and the gate alone, much faster);
`total` counts both. Stop early with `progress.stop.set()`. Tokens are renewed every two minutes when
Keycloak answers; when it does not, the ones in hand are kept (they stay valid for five minutes).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from . import signin_flow

API = "/api/2.0/mlflow"
TOKEN_RENEWAL_SECONDS = 120.0
# After a failed renewal (Keycloak down), the next attempt comes this much later.
RENEWAL_RETRY_SECONDS = 5.0
# Statuses a refused request may get: unauthenticated, forbidden, throttled, unavailable.
REFUSALS = frozenset({401, 403, 429, 503})


@dataclass(frozen=True)
class Record:
    """One response (or transport failure, status 0) to one request of the load."""

    kind: str
    user: str
    expect: str  # "allow" or "refuse"
    status: int
    started: float
    seconds: float
    detail: str = ""
    gateway: str = ""


@dataclass(frozen=True)
class Write:
    """A write MLflow acknowledged; `verify` reads it back."""

    kind: str  # "tag", "exists" or "delete"
    experiment_id: str
    key: str = ""
    value: str = ""


class Tokens:
    """Password-grant access tokens per user, renewed while Keycloak answers."""

    def __init__(self, stack: dict[str, Any]) -> None:
        self._stack = stack
        self._url = f"{stack['keycloak_url']}/realms/{stack['realm']}/protocol/openid-connect/token"
        self._tokens: dict[str, tuple[str, float]] = {}

    def fetch(self, username: str) -> str:
        response = httpx.post(
            self._url,
            data={
                "grant_type": "password",
                "client_id": self._stack["clients"]["cli"]["client_id"],
                "username": username,
                "password": self._stack["users"][username]["password"],
            },
            timeout=10,
        )
        response.raise_for_status()
        token = str(response.json()["access_token"])
        self._tokens[username] = (token, time.monotonic())
        return token

    async def get(self, username: str, http: httpx.AsyncClient) -> str:
        token, fetched = self._tokens[username]
        if time.monotonic() - fetched < TOKEN_RENEWAL_SECONDS:
            return token
        # One renewal attempt at a time; a failed one is retried a few seconds later.
        self._tokens[username] = (token, time.monotonic() - TOKEN_RENEWAL_SECONDS + RENEWAL_RETRY_SECONDS)
        try:
            response = await http.post(
                self._url,
                data={
                    "grant_type": "password",
                    "client_id": self._stack["clients"]["cli"]["client_id"],
                    "username": username,
                    "password": self._stack["users"][username]["password"],
                },
                timeout=5,
            )
            if response.status_code == 200:
                token = str(response.json()["access_token"])
                self._tokens[username] = (token, time.monotonic())
        except httpx.HTTPError:
            pass
        return token


@dataclass
class LoadResult:
    records: list[Record]
    writes: list[Write]
    readback_url: str
    canary_id: str
    seconds: float

    def counts(self) -> Counter[tuple[str, str, int]]:
        return Counter((record.kind, record.user, record.status) for record in self.records)

    @property
    def forbidden_allowed(self) -> list[Record]:
        """Requests the realm forbids that got a 2xx: each one is an opened door."""
        return [r for r in self.records if r.expect == "refuse" and 200 <= r.status < 300]

    @property
    def refused_wrongly(self) -> list[Record]:
        """Refused requests answered with something other than 401/403/429/503 (e.g. a 500)."""
        return [r for r in self.records if r.expect == "refuse" and r.status not in REFUSALS and r.status >= 300]

    def summary(self) -> str:
        by_status = Counter(record.status for record in self.records)
        allowed = [r for r in self.records if r.expect == "allow"]
        lines = [
            f"{len(self.records)} requests in {self.seconds:.1f} s "
            f"({len(self.records) / max(self.seconds, 0.001):.0f}/s); statuses {dict(sorted(by_status.items()))}",
            f"  allowed-by-realm requests: {len(allowed)}, answered 2xx: {sum(1 for r in allowed if 200 <= r.status < 300)}",
            f"  forbidden-by-realm requests: {len(self.records) - len(allowed)}, answered 2xx: {len(self.forbidden_allowed)}",
            f"  acknowledged writes: {len(self.writes)}",
        ]
        for (kind, user, status), count in sorted(self.counts().items()):
            lines.append(f"    {kind:16} {user:8} {status:3} x {count}")
        return "\n".join(lines)

    def lost_writes(self) -> list[Write]:
        """Acknowledged writes MLflow does not show afterwards (read directly from MLflow)."""
        lost: list[Write] = []
        experiments: dict[str, dict[str, Any]] = {}
        with httpx.Client(base_url=self.readback_url, timeout=30) as mlflow:
            for write in self.writes:
                if write.experiment_id not in experiments:
                    response = mlflow.get(f"{API}/experiments/get", params={"experiment_id": write.experiment_id})
                    experiments[write.experiment_id] = response.json().get("experiment", {}) if response.is_success else {}
                experiment = experiments[write.experiment_id]
                tags = {tag["key"]: tag["value"] for tag in experiment.get("tags", [])}
                if (
                    not experiment
                    or (write.kind == "tag" and tags.get(write.key) != write.value)
                    or (write.kind == "delete" and experiment.get("lifecycle_stage") != "deleted")
                ):
                    lost.append(write)
        return lost

    def canary_problems(self) -> list[str]:
        """The experiment forbidden deletes and tag writes were aimed at must be untouched."""
        with httpx.Client(base_url=self.readback_url, timeout=30) as mlflow:
            response = mlflow.get(f"{API}/experiments/get", params={"experiment_id": self.canary_id})
        response.raise_for_status()
        experiment = response.json()["experiment"]
        problems = []
        if experiment["lifecycle_stage"] != "active":
            problems.append(f"canary experiment {self.canary_id} was deleted")
        planted = [tag["key"] for tag in experiment.get("tags", []) if tag["key"].startswith("forbidden-")]
        if planted:
            problems.append(f"forbidden tag writes reached MLflow: {planted[:5]}")
        return problems

    def verify(self) -> None:
        """Zero forbidden requests allowed, zero acknowledged writes lost, canary untouched."""
        problems = [f"forbidden request allowed: {r}" for r in self.forbidden_allowed[:10]]
        problems += [f"refusal with an unexpected status: {r}" for r in self.refused_wrongly[:10]]
        problems += [f"acknowledged write lost: {w}" for w in self.lost_writes()[:10]]
        problems += self.canary_problems()
        assert not problems, "\n".join(problems)


def browser_session(stack: dict[str, Any], gateway: str) -> str:
    """bob signs in through the gateway and Keycloak's login form; returns the session cookie."""
    with httpx.Client(base_url=gateway, timeout=30, follow_redirects=False) as browser:
        callback = signin_flow.log_in(signin_flow.start(browser), "bob", stack["users"]["bob"]["password"])
        signin_flow.finish(browser, callback)
        cookie = browser.cookies.get("mlflow_gate_session")
    assert cookie, "bob's browser sign-in did not set a session cookie"
    return str(cookie)


class Progress:
    """A load running in a background thread."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._result: LoadResult | None = None
        self._error: BaseException | None = None

    @property
    def done(self) -> int:
        return len(self.records)

    def since(self, moment: float) -> list[Record]:
        """Records of requests started at or after `moment` (time.monotonic())."""
        return [record for record in list(self.records) if record.started >= moment]

    def result(self, timeout: float | None = None) -> LoadResult:
        assert self._thread is not None
        self._thread.join(timeout)
        if self._error is not None:
            raise self._error
        assert self._result is not None, "the load is still running"
        return self._result


@dataclass
class MixedLoad:
    stack: dict[str, Any]
    tokens: Tokens
    session_cookie: str
    canary_id: str
    experiments: dict[str, str]  # user -> an experiment of theirs for reads and tag writes
    concurrency: int = 12
    mlflow_concurrency: int = 4
    readback_url: str = ""
    gateway_url: str = ""
    spread_over: tuple[str, ...] = ()
    _rng: random.Random = field(default_factory=lambda: random.Random(8))
    _serial: Iterator[int] = field(default_factory=itertools.count)
    _gateways: Iterator[str] = field(default_factory=lambda: iter(()))

    @classmethod
    def prepare(
        cls,
        stack: dict[str, Any],
        gateway_url: str | None = None,
        readback_url: str | None = None,
        spread_over: tuple[str, ...] = (),
    ) -> MixedLoad:
        """Tokens for alice, bob and carol, a browser session for bob, and the experiments used."""
        tokens = Tokens(stack)
        for user in ("alice", "bob", "carol"):
            tokens.fetch(user)
        gateway = gateway_url or stack["gateway_url"]
        run = secrets.token_hex(3)
        with httpx.Client(base_url=gateway, timeout=30) as http:
            experiments = {}
            for user in ("alice", "bob"):
                response = http.post(
                    f"{API}/experiments/create",
                    json={"name": f"load-{user}-{run}"},
                    headers={"Authorization": f"Bearer {tokens.fetch(user)}"},
                )
                response.raise_for_status()
                experiments[user] = response.json()["experiment_id"]
            canary = http.post(
                f"{API}/experiments/create",
                json={"name": f"load-canary-{run}"},
                headers={"Authorization": f"Bearer {tokens.fetch('alice')}"},
            )
            canary.raise_for_status()
        return cls(
            stack=stack,
            tokens=tokens,
            session_cookie=browser_session(stack, gateway),
            canary_id=canary.json()["experiment_id"],
            experiments=experiments,
            readback_url=readback_url or stack["mlflow_url"],
            gateway_url=gateway,
            spread_over=spread_over,
        )

    def renew_session(self) -> None:
        """Sign bob's browser in again, e.g. after a Redis without persistence lost the sessions."""
        self.session_cookie = browser_session(self.stack, self.gateway_url)

    def run(self, total: int) -> LoadResult:
        with self.running(total) as progress:
            pass
        return progress.result()

    @contextmanager
    def running(self, total: int) -> Iterator[Progress]:
        """Run `total` requests in a background thread; leaving the block waits for them."""
        progress = Progress()

        def target() -> None:
            try:
                progress._result = asyncio.run(self._load(total, progress))
            except BaseException as error:  # handed to the test thread by Progress.result()
                progress._error = error

        progress._thread = threading.Thread(target=target, name="mixed-load", daemon=True)
        progress._thread.start()
        try:
            yield progress
        except BaseException:
            progress.stop.set()
            raise
        finally:
            progress._thread.join()

    async def _load(self, total: int, progress: Progress) -> LoadResult:
        writes: list[Write] = []
        remaining = iter(range(total))
        began = time.monotonic()
        self._gateways = itertools.cycle(self.spread_over or (self.gateway_url,))
        limits = httpx.Limits(max_connections=self.concurrency * 2, max_keepalive_connections=self.concurrency * 2)
        async with httpx.AsyncClient(base_url=self.gateway_url, timeout=30, limits=limits) as http:

            async def worker(reaches_mlflow: bool) -> None:
                for _ in remaining:
                    if progress.stop.is_set():
                        return
                    if reaches_mlflow:
                        await self._allowed(http, progress.records, writes)
                    else:
                        await self._refused(http, progress.records, next(self._serial))

            mlflow_workers = min(self.mlflow_concurrency, self.concurrency - 1)
            await asyncio.gather(
                *(worker(True) for _ in range(mlflow_workers)),
                *(worker(False) for _ in range(self.concurrency - mlflow_workers)),
            )
        return LoadResult(list(progress.records), writes, self.readback_url, self.canary_id, time.monotonic() - began)

    async def _allowed(self, http: httpx.AsyncClient, records: list[Record], writes: list[Write]) -> None:
        """Reads (55 %), tag writes (35 %) and alice's create-then-delete (10 %)."""
        roll = self._rng.random()
        if roll < 0.55:
            await self._read(http, records)
        elif roll < 0.9:
            await self._tag(http, records, writes, next(self._serial))
        else:
            await self._create_and_delete(http, records, writes)

    async def _send(
        self,
        http: httpx.AsyncClient,
        records: list[Record],
        kind: str,
        user: str,
        expect: str,
        method: str,
        path: str,
        **kwargs: Any,
    ) -> httpx.Response | None:
        gateway = next(self._gateways)
        started = time.monotonic()
        try:
            response = await http.request(method, f"{gateway}{path}", **kwargs)
        except httpx.HTTPError as error:
            records.append(Record(kind, user, expect, 0, started, time.monotonic() - started, repr(error), gateway))
            return None
        detail = response.text[:200] if expect == "refuse" and response.is_success else ""
        elapsed = time.monotonic() - started
        records.append(Record(kind, user, expect, response.status_code, started, elapsed, detail, gateway))
        return response

    async def _bearer(self, http: httpx.AsyncClient, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.tokens.get(user, http)}"}

    def _session(self) -> dict[str, str]:
        # A same-site XHR from the MLflow UI: the headers a browser sends with its cookie.
        return {
            "Cookie": f"mlflow_gate_session={self.session_cookie}",
            "Origin": self.gateway_url,
            "Sec-Fetch-Site": "same-origin",
            "Sec-Fetch-Mode": "cors",
            "Accept": "application/json",
        }

    async def _refused(self, http: httpx.AsyncClient, records: list[Record], serial: int) -> None:
        """Requests the realm forbids: each one aims at the canary experiment."""
        canary = {"experiment_id": self.canary_id}
        tag = {**canary, "key": f"forbidden-{serial}", "value": "must never be stored"}
        choice = serial % 6
        if choice == 0:
            headers = await self._bearer(http, "bob")
            await self._send(http, records, "delete", "bob", "refuse", "POST", f"{API}/experiments/delete", json=canary, headers=headers)
        elif choice == 1:
            await self._send(http, records, "delete", "session", "refuse", "POST", f"{API}/experiments/delete", json=canary, headers=self._session())
        elif choice == 2:
            headers = await self._bearer(http, "carol")
            await self._send(http, records, "read", "carol", "refuse", "GET", f"{API}/experiments/get", params=canary, headers=headers)
        elif choice == 3:
            headers = await self._bearer(http, "carol")
            await self._send(http, records, "write", "carol", "refuse", "POST", f"{API}/experiments/set-experiment-tag", json=tag, headers=headers)
        elif choice == 4:
            headers = await self._bearer(http, "carol")
            await self._send(http, records, "delete", "carol", "refuse", "POST", f"{API}/experiments/delete", json=canary, headers=headers)
        else:
            await self._send(http, records, "write", "anonymous", "refuse", "POST", f"{API}/experiments/set-experiment-tag", json=tag)

    async def _read(self, http: httpx.AsyncClient, records: list[Record]) -> None:
        user = self._rng.choice(("alice", "bob", "session"))
        headers = self._session() if user == "session" else await self._bearer(http, user)
        experiment = self.experiments["bob" if user == "session" else user]
        await self._send(
            http, records, "read", user, "allow", "GET", f"{API}/experiments/get",
            params={"experiment_id": experiment}, headers=headers,
        )

    async def _tag(self, http: httpx.AsyncClient, records: list[Record], writes: list[Write], serial: int) -> None:
        user = self._rng.choice(("alice", "bob", "session"))
        headers = self._session() if user == "session" else await self._bearer(http, user)
        experiment = self.experiments["bob" if user == "session" else user]
        key, value = f"load-{serial}", secrets.token_hex(4)
        response = await self._send(
            http, records, "write", user, "allow", "POST", f"{API}/experiments/set-experiment-tag",
            json={"experiment_id": experiment, "key": key, "value": value}, headers=headers,
        )
        if response is not None and response.status_code == 200:
            writes.append(Write("tag", experiment, key, value))

    async def _create_and_delete(self, http: httpx.AsyncClient, records: list[Record], writes: list[Write]) -> None:
        """alice creates an experiment and deletes it: two writes an Admin may make."""
        headers = await self._bearer(http, "alice")
        created = await self._send(
            http, records, "create", "alice", "allow", "POST", f"{API}/experiments/create",
            json={"name": f"load-doomed-{secrets.token_hex(6)}"}, headers=headers,
        )
        if created is None or created.status_code != 200:
            return
        experiment_id = created.json()["experiment_id"]
        writes.append(Write("exists", experiment_id))
        deleted = await self._send(
            http, records, "delete", "alice", "allow", "POST", f"{API}/experiments/delete",
            json={"experiment_id": experiment_id}, headers=headers,
        )
        if deleted is not None and deleted.status_code == 200:
            writes[-1] = Write("delete", experiment_id)
