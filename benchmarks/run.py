"""What one benchmark run measures, in order; returns the results the report is written from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

from stack import procs
from stack.layout import Layout

from . import cold, load, peers, users
from .load import Load, Run, Usage

URI = "/api/2.0/mlflow/experiments/get?experiment_id=0"
MICRO_CACHE_SECONDS = 5


@dataclass(frozen=True)
class Row:
    group: str
    path: str
    run: Run
    cpu_us_per_request: float | None = None
    max_rss_mib: float | None = None


@dataclass(frozen=True)
class Pairs:
    """Alternating runs of a reference path and the gate's; each ratio is gate / reference."""

    reference: str
    runs: list[tuple[Run, Run]]

    @property
    def ratios(self) -> list[float]:
        return [gate.rps / reference.rps if reference.rps else float("inf") for reference, gate in self.runs]


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    pairs: list[Pairs] = field(default_factory=list)
    workspace_pairs: Pairs | None = None
    cold: cold.ColdRun | None = None
    identical_miss_calls: list[float] = field(default_factory=list)

    def row(self, path: str) -> Row:
        return next(row for row in self.rows if row.path == path)


@dataclass(frozen=True)
class Plan:
    static: Load
    end_to_end: Load
    pairs: int
    cold_users: int

    @classmethod
    def full(cls) -> Plan:
        return cls(static=Load(), end_to_end=Load(), pairs=5, cold_users=100)

    @classmethod
    def quick(cls) -> Plan:
        short = Load(seconds=3, warmup=1)
        return cls(static=short, end_to_end=short, pairs=2, cold_users=10)


def measure(url: str, headers: dict[str, str], plan_load: Load, leader: int | None) -> tuple[Run, Usage | None]:
    load.warm_up(url, headers, plan_load)
    if leader is None:
        return load.measured(url, headers, plan_load), None
    with load.watched(leader) as usage:
        run = load.measured(url, headers, plan_load)
    return run, usage


def row(group: str, path: str, run: Run, usage: Usage | None) -> Row:
    if usage is None:
        return Row(group, path, run)
    return Row(group, path, run, usage.cpu / run.requests * 1e6, usage.max_rss_mib)


Headers = Callable[[], dict[str, str]]


def alternating(pairs: int, first: Callable[[], Run], second: Callable[[], Run]) -> list[tuple[Run, Run]]:
    """`pairs` (first, second) measurements; the order flips every pair so drift favours neither."""
    runs = []
    for number in range(pairs):
        if number % 2 == 0:
            a = first()
            b = second()
        else:
            b = second()
            a = first()
        runs.append((a, b))
    return runs


def workspaces_on_and_off(started: peers.Peers, bearer: Headers, plan: Plan, say: Callable[[str], None]) -> Pairs:
    """Two one-worker gates that differ only in GATE_WORKSPACES, each behind its own NGINX,
    measured in alternating pairs; each ratio is workspaces on / off."""
    say(f"measuring: {plan.pairs} alternating pairs, gate with workspaces off and on")
    gates = {
        on: started.gate(f"bench-gate-workspaces-{'on' if on else 'off'}", 1, {"GATE_WORKSPACES": "on" if on else "off"})
        for on in (False, True)
    }
    gateways = {on: started.nginx(f"bench-nginx-workspaces-{on}", f"127.0.0.1:{gate.port}", None) for on, gate in gates.items()}
    runs = alternating(
        plan.pairs,
        lambda: measure(gateways[False].url + URI, bearer(), plan.static, None)[0],
        lambda: measure(gateways[True].url + URI, bearer(), plan.static, None)[0],
    )
    for process in (*gateways.values(), *gates.values()):
        started.stop(process)
    return Pairs("gate, workspaces off", runs)


def run(layout: Layout, stack: dict[str, Any], plan: Plan, say: Callable[[str], None]) -> Results:
    results = Results()

    def bearer() -> dict[str, str]:
        """A new token for every measurement: one issued at the start expires long before the end."""
        return {"Authorization": f"Bearer {users.realm_token(stack, 'bob', stack['users']['bob']['password'])}"}

    gate_address = stack["gate_url"].removeprefix("http://")
    mlflow_address = stack["mlflow_url"].removeprefix("http://")
    gate_pid = procs.alive(layout, "gate")
    if gate_pid is None:
        raise RuntimeError("the stack's gate is not running")
    static = "gate alone, static upstream"
    with peers.Peers(layout) as started:

        def static_row(path: str, gate: str | None, headers: Headers, leader: int | None, **options: Any) -> None:
            say(f"measuring: {path}")
            gateway = started.nginx(f"bench-nginx-{len(results.rows)}", gate, None, **options)
            answered = httpx.get(gateway.url + URI, headers=headers(), timeout=60)
            if answered.status_code != 200:
                raise RuntimeError(f"{path}: a single request answered {answered.status_code}, not 200")
            measured_run, usage = measure(gateway.url + URI, headers(), plan.static, leader)
            results.rows.append(row(static, path, measured_run, usage))
            started.stop(gateway)

        static_row("NGINX, no auth_request (the limit)", None, dict, None)
        noop = started.noop_fastapi()
        static_row("NGINX + do-nothing FastAPI endpoint", f"127.0.0.1:{noop.port}", bearer, noop.pid)
        started.stop(noop)
        static_row("NGINX + gate, warm, 1 worker", gate_address, bearer, gate_pid)
        two = started.gate("bench-gate-2-workers", 2)
        static_row("NGINX + gate, warm, 2 workers", f"127.0.0.1:{two.port}", bearer, two.pid)
        started.stop(two)
        static_row(
            f"NGINX + gate, micro-cache {MICRO_CACHE_SECONDS} s",
            gate_address,
            bearer,
            gate_pid,
            cache_seconds=MICRO_CACHE_SECONDS,
        )
        results.workspace_pairs = workspaces_on_and_off(started, bearer, plan, say)
        proxy = started.oauth2_proxy(stack["keycloak_url"], stack["realm"])
        static_row("NGINX + oauth2-proxy (JWT bearer)", f"127.0.0.1:{proxy.port}", bearer, proxy.pid, oauth2_proxy=True)
        started.stop(proxy)

        say(f"creating {plan.cold_users + 3} realm users for the cold rows")
        tokens = users.fresh_tokens(stack, plan.cold_users + 3)
        gateway = started.nginx("bench-nginx-cold", gate_address, None)
        say("measuring: NGINX + gate, cold (every request a new user and permission)")
        results.cold = cold.cold(gateway.url, stack["gate_url"], tokens[3:])
        say("measuring: 100 identical misses at once")
        results.identical_miss_calls = cold.identical_misses(gateway.url, stack["gate_url"], tokens[:3])
        started.stop(gateway)

        open_gateway = started.nginx("bench-nginx-mlflow-open", None, mlflow_address)
        gated = started.nginx("bench-nginx-mlflow-gated", gate_address, mlflow_address)

        def alternate(reference: str, reference_run: Callable[[], Run]) -> None:
            say(f"measuring: {plan.pairs} alternating pairs, {reference} and the gate")

            def gate_run() -> Run:
                return measure(gated.url + URI, bearer(), plan.end_to_end, None)[0]

            results.pairs.append(Pairs(reference, alternating(plan.pairs, reference_run, gate_run)))

        alternate("NGINX -> MLflow, no auth", lambda: measure(open_gateway.url + URI, {}, plan.end_to_end, None)[0])
        for ttl in (0, 60):
            basic = started.mlflow_basic_auth(ttl)
            header = {"Authorization": peers.basic_header(peers.BASIC_USER)}
            if ttl == 0:
                # Every request hashes the password (seconds each here): 32 connections would see no
                # answer within a 10 s run, so fewer connections, a longer run and a long timeout.
                basic_load = replace(plan.end_to_end, connections=4, seconds=3 * plan.end_to_end.seconds, timeout=60.0)
            else:
                # Each worker caches the answer after one hash; fill both caches without a storm of
                # 32 concurrent hashes at the start (the storm returns whenever the cache expires).
                basic_load = plan.end_to_end
                load.warm_up(basic.url + URI, header, replace(plan.end_to_end, connections=4, warmup=20, timeout=60.0))
            name = "MLflow basic-auth, defaults" if ttl == 0 else f"MLflow basic-auth, auth_cache_ttl_seconds={ttl}"
            alternate(name, lambda: measure(basic.url + URI, header, basic_load, None)[0])
            started.stop(basic)
    return results
