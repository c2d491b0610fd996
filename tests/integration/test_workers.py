"""GATE_WORKERS: several uvicorn worker processes on one port, counted together in the metrics."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from .local_processes import gate
from .realm_client import RealmClient, gate_counter

pytestmark = pytest.mark.integration

SEARCH = "/api/2.0/mlflow/experiments/search"


def worker_pids(log: Path) -> set[str]:
    """uvicorn logs "Started server process [pid]" once per worker."""
    return set(re.findall(r"Started server process \[(\d+)\]", log.read_text()))


def test_two_workers_answer_and_every_check_is_counted_once(stack: dict[str, Any], tmp_path: Path) -> None:
    token = RealmClient(stack).token("bob")
    settings = {
        "GATE_KEYCLOAK_URL": stack["keycloak_url"],
        "GATE_REALM": stack["realm"],
        "GATE_REDIS_URL": stack["redis_url"],
        "GATE_WORKERS": "2",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    with gate(tmp_path, settings) as port:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while len(worker_pids(tmp_path / "gate.log")) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(worker_pids(tmp_path / "gate.log")) == 2
        checks = 60
        for _ in range(checks):  # a new connection each time, so both workers accept some
            answer = httpx.get(
                f"{base}/_gate/check",
                headers={"Authorization": f"Bearer {token}", "X-Original-Method": "GET", "X-Original-URI": SEARCH},
                timeout=30,
            )
            assert answer.status_code == 200
        scrapes = {gate_counter({"gate_url": base}, "gate_checks_total", outcome="allowed") for _ in range(10)}
        assert scrapes == {checks}, scrapes
        assert gate_counter({"gate_url": base}, "gate_keycloak_request_seconds_count", endpoint="uma") <= 2
        ready = httpx.get(f"{base}/_gate/ready", timeout=30)
        assert ready.status_code == 200 and ready.json()["status"] == "ok"
