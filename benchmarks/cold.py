"""The cold path: every request a question the gate has never seen, and identical misses at once.

A Python client is enough here: Keycloak's decision rate (~150/s on this machine) bounds the path,
not the client. The gate's own counters give the Keycloak decision calls per distinct question.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

# One GET per readable resource of a Default user: each (user, URI) is a distinct question.
READS = (
    "/api/2.0/mlflow/experiments/get?experiment_id=0",
    "/api/2.0/mlflow/runs/get?run_id=0",
    "/api/2.0/mlflow/registered-models/get?name=m",
    "/api/2.0/mlflow/model-versions/get?name=m&version=1",
    "/api/2.0/mlflow/logged-models/m-0",
    "/api/2.0/mlflow/traces/tr-0/info",
)


@dataclass(frozen=True)
class ColdRun:
    questions: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    failures: int
    keycloak_calls: float


def keycloak_decision_calls(gate_url: str) -> float:
    """UMA decision requests the gate has sent Keycloak (its Keycloak-call histogram's count)."""
    text = httpx.get(f"{gate_url}/_gate/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "gate_keycloak_request_seconds_count" and sample.labels.get("endpoint") == "uma"
    )


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def _cold(gateway: str, tokens: list[str], concurrency: int) -> tuple[list[float], int, float]:
    questions = [(token, uri) for uri in READS for token in tokens]
    latencies: list[float] = []
    failures = 0
    pending = iter(questions)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal failures
        for token, uri in pending:
            started = time.perf_counter()
            response = await client.get(gateway + uri, headers={"Authorization": f"Bearer {token}"})
            latencies.append(time.perf_counter() - started)
            failures += response.status_code != 200

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        began = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return latencies, failures, time.perf_counter() - began


def cold(gateway: str, gate_url: str, tokens: list[str], concurrency: int = 16) -> ColdRun:
    calls_before = keycloak_decision_calls(gate_url)
    latencies, failures, seconds = asyncio.run(_cold(gateway, tokens, concurrency))
    calls = keycloak_decision_calls(gate_url) - calls_before
    return ColdRun(
        questions=len(latencies),
        seconds=seconds,
        rps=len(latencies) / seconds,
        p50_ms=percentile(latencies, 0.5) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
        failures=failures,
        keycloak_calls=calls / len(latencies),
    )


async def _burst(gateway: str, token: str, uri: str, size: int) -> list[int]:
    limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        responses = await asyncio.gather(
            *(client.get(gateway + uri, headers={"Authorization": f"Bearer {token}"}) for _ in range(size))
        )
    return [response.status_code for response in responses]


def identical_misses(gateway: str, gate_url: str, tokens: list[str], size: int = 100) -> list[float]:
    """For each fresh token: `size` identical requests at once; the Keycloak calls each burst caused."""
    calls = []
    for token in tokens:
        before = keycloak_decision_calls(gate_url)
        statuses = asyncio.run(_burst(gateway, token, READS[0], size))
        if set(statuses) != {200}:
            raise RuntimeError(f"identical-miss burst answered {sorted(set(statuses))}")
        calls.append(keycloak_decision_calls(gate_url) - before)
    return calls


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
