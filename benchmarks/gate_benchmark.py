"""Latency and throughput of the gate against the running local stack (`python3 -m stack up`).

Reports numbers; it asserts nothing. Every loop is bounded and all traffic stays on loopback.

    ~/.cache/mlflow-gate/venv/bin/python benchmarks/gate_benchmark.py [--requests N]

The Python client shares the two cores with the stack, so it understates the gate's capacity under
concurrency; for that, load the check endpoint from `wrk` (Debian package) instead:

    wrk -t1 -c16 -d10s --latency -H "Authorization: Bearer $TOKEN" -H "X-Original-Method: GET" \
        -H "X-Original-URI: /api/2.0/mlflow/experiments/search" http://127.0.0.1:8090/_gate/check
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

STACK_FILE = Path(__file__).resolve().parents[1] / ".stack" / "stack.json"
SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"


def user_token(stack: dict[str, Any], username: str) -> str:
    response = httpx.post(
        f"{stack['keycloak_url']}/realms/{stack['realm']}/protocol/openid-connect/token",
        data={
            "grant_type": "password",
            "client_id": stack["clients"]["cli"]["client_id"],
            "username": username,
            "password": stack["users"][username]["password"],
        },
        timeout=30,
    )
    response.raise_for_status()
    return response.json()["access_token"]


def summary(name: str, latencies: list[float], wall: float) -> str:
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000

    return (
        f"{name:<46} n={len(ordered):>5}  p50={pct(50):7.2f} ms  p95={pct(95):7.2f} ms  "
        f"p99={pct(99):7.2f} ms  mean={statistics.fmean(ordered) * 1000:7.2f} ms  {len(ordered) / wall:8.0f} req/s"
    )


async def measure(
    name: str, client: httpx.AsyncClient, request: dict[str, Any], total: int, concurrency: int
) -> str:
    latencies: list[float] = []
    queue = iter(range(total))

    async def worker() -> None:
        for _ in queue:
            started = time.perf_counter()
            response = await client.request(**request)
            latencies.append(time.perf_counter() - started)
            if response.status_code >= 500:
                raise RuntimeError(f"{name}: HTTP {response.status_code}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return summary(name, latencies, time.perf_counter() - started)


async def run(stack: dict[str, Any], total: int) -> None:
    bob = user_token(stack, "bob")
    bearer = {"Authorization": f"Bearer {bob}"}
    check = {
        "method": "GET",
        "url": f"{stack['gate_url']}/_gate/check",
        "headers": {**bearer, "X-Original-Method": "GET", "X-Original-URI": SEARCH},
    }
    uma = {
        "method": "POST",
        "url": f"{stack['keycloak_url']}/realms/{stack['realm']}/protocol/openid-connect/token",
        "headers": bearer,
        "data": {
            "grant_type": "urn:ietf:params:oauth:grant-type:uma-ticket",
            "audience": stack["clients"]["gate"]["client_id"],
            "permission": "experiments#read",
            "response_mode": "decision",
        },
    }
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        await client.request(**check)
        lines = [
            await measure("gate check, cached decision, 1 client", client, check, total, 1),
            await measure("gate check, cached decision, 16 clients", client, check, total, 16),
            await measure("Keycloak UMA decision (a cache miss), 1 client", client, uma, max(50, total // 10), 1),
            await measure("Keycloak UMA decision, 8 clients", client, uma, max(50, total // 10), 8),
            await measure(
                "MLflow search directly (no gateway)",
                client,
                {"method": "GET", "url": f"{stack['mlflow_url']}{SEARCH}"},
                total // 2,
                1,
            ),
            await measure(
                "MLflow search through NGINX + gate",
                client,
                {"method": "GET", "url": f"{stack['gateway_url']}{SEARCH}", "headers": bearer},
                total // 2,
                1,
            ),
            await measure(
                "MLflow search through NGINX + gate, 16 clients",
                client,
                {"method": "GET", "url": f"{stack['gateway_url']}{SEARCH}", "headers": bearer},
                total,
                16,
            ),
        ]
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per measurement (bounded)")
    args = parser.parse_args()
    if not STACK_FILE.exists():
        raise SystemExit(f"{STACK_FILE} not found: start the stack with `python3 -m stack up`")
    asyncio.run(run(json.loads(STACK_FILE.read_text()), min(args.requests, 20_000)))


if __name__ == "__main__":
    main()
