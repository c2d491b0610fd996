"""A mixed MLflow load over several NGINX instances that records what each request should get.

Every request knows its expected outcome (the role table decides), so the tally can tell a
correct denial from a forbidden request that got through, and every acknowledged write is
remembered so it can be looked up in the database afterwards.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

API = "/api/2.0/mlflow"
AJAX = "/ajax-api/2.0/mlflow"


@dataclass(frozen=True)
class Actor:
    """One caller: a user with a bearer token or a browser session cookie."""

    name: str
    role: str  # "Admin", "Default" or "" (no role)
    headers: Callable[[], dict[str, str]]
    prefix: str = API  # browsers use MLflow's ajax-api paths, as the UI does


@dataclass
class Tally:
    """Outcome counts per NGINX instance, and the writes MLflow acknowledged."""

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    errors: list[tuple[float, float, str, str]] = field(default_factory=list)
    runs: dict[str, str] = field(default_factory=dict)  # run id -> "active" | "deleted"
    metrics: set[tuple[str, int]] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def total(self) -> int:
        with self.lock:
            return sum(self.counts.values())

    def add(self, gateway: str, outcome: str, started: float, detail: str = "") -> None:
        with self.lock:
            self.counts[gateway, outcome] += 1
            if outcome == "error":
                self.errors.append((started, time.monotonic(), gateway, detail))

    def by_outcome(self) -> Counter[str]:
        with self.lock:
            result: Counter[str] = Counter()
            for (_, outcome), count in self.counts.items():
                result[outcome] += count
            return result


class Load:
    """Worker threads that loop over the actors' scenarios, alternating NGINX instances."""

    def __init__(self, gateways: list[str], actors: list[Actor], experiment_id: str, workers: int) -> None:
        self.gateways = gateways
        self.actors = actors
        self.experiment_id = experiment_id
        self.workers = workers
        self.tally = Tally()
        self.stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for index in range(self.workers):
            thread = threading.Thread(target=self._work, args=(index,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def finish(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _work(self, index: int) -> None:
        clients = {url: httpx.Client(base_url=url, timeout=30) for url in self.gateways}
        gateways = itertools.cycle(self.gateways[index % len(self.gateways) :] + self.gateways[: index % len(self.gateways)])
        try:
            for iteration in itertools.count():
                if self.stop.is_set():
                    return
                actor = self.actors[(index + iteration) % len(self.actors)]
                self._scenario(actor, lambda: clients[next(gateways)], iteration)
        finally:
            for client in clients.values():
                client.close()

    def _call(
        self, client: httpx.Client, actor: Actor, method: str, path: str, allowed: bool, body: Any = None
    ) -> dict[str, Any] | None:
        """One request; returns MLflow's JSON when it succeeded as expected."""
        gateway = str(client.base_url).rstrip("/")
        started = time.monotonic()
        try:
            response = client.request(method, f"{actor.prefix}{path}", headers=actor.headers(), json=body)
        except httpx.TransportError as error:
            self.tally.add(gateway, "error", started, f"{method} {path}: {error!r}")
            time.sleep(0.05)  # a dead NGINX refuses at once; do not spin on it
            return None
        status = response.status_code
        if status >= 500:
            self.tally.add(gateway, "error", started, f"{method} {path}: {status} {response.text[:200]}")
            return None
        if allowed and status == 200:
            self.tally.add(gateway, "allowed", started)
            return dict(response.json())
        if not allowed and status == 403:
            self.tally.add(gateway, "denied", started)
            return None
        if not allowed and status < 300:
            self.tally.add(gateway, "forbidden_allowed", started, f"{actor.name} {method} {path}")
        elif allowed and status in (401, 403):
            self.tally.add(gateway, "wrongly_denied", started, f"{actor.name} {method} {path}: {status}")
        else:
            self.tally.add(gateway, "unexpected", started, f"{actor.name} {method} {path}: {status} {response.text[:200]}")
        return None

    def _scenario(self, actor: Actor, client: Callable[[], httpx.Client], iteration: int) -> None:
        """Reads, writes and deletes as this actor's role allows or forbids them."""
        experiment = self.experiment_id
        may_write = actor.role in ("Admin", "Default")
        self._call(client(), actor, "GET", f"/experiments/get?experiment_id={experiment}", may_write)
        created = self._call(client(), actor, "POST", "/runs/create", may_write, {"experiment_id": experiment})
        if created is None:
            return
        run_id = created["run"]["info"]["run_id"]
        with self.tally.lock:
            self.tally.runs[run_id] = "active"
        for step in range(3):
            metric = {"run_id": run_id, "key": "load", "value": step, "timestamp": int(time.time() * 1000), "step": step}
            if self._call(client(), actor, "POST", "/runs/log-metric", True, metric) is not None:
                with self.tally.lock:
                    self.tally.metrics.add((run_id, step))
        self._call(client(), actor, "GET", f"/runs/get?run_id={run_id}", True)
        self._call(
            client(), actor, "POST", "/runs/search", True, {"experiment_ids": [experiment], "max_results": 5}
        )
        # Only Admin may delete: Default's attempt on its own run must be refused.
        if self._call(client(), actor, "POST", "/runs/delete", actor.role == "Admin", {"run_id": run_id}) is not None:
            with self.tally.lock:
                self.tally.runs[run_id] = "deleted"
        if actor.role == "Default" and iteration % 4 == 0:
            self._call(client(), actor, "POST", "/experiments/delete", False, {"experiment_id": experiment})
