"""Extra real NGINX and gate processes beside the stack, for tests that rewire one connection.

They use the product's own template and package; only the upstream they point at differs (a
recorder, a closed port), so a test can observe or break one hop without touching the shared stack.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

from stack.components import MLFLOW_HOST_HEADER
from stack.nginx import write_configs

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"process exited {process.returncode}: {log.read_text(errors='replace')}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"nothing listens on {port}: {log.read_text(errors='replace')}")


@contextmanager
def running(command: list[str], port: int, log: Path, env: dict[str, str] | None = None) -> Iterator[None]:
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    try:
        wait_for_port(port, process, log)
        yield
    finally:
        process.terminate()
        process.wait(timeout=15)


@contextmanager
def gateway_nginx(
    state: Path, gate_upstream: str, mlflow_upstream: str, extra: Mapping[str, str] | None = None
) -> Iterator[int]:
    """A second NGINX rendered from nginx/gateway.conf.template (`extra`: more placeholder
    values, such as the micro-cache's); yields its port."""
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    assert nginx, "nginx not installed (the stack runner installs it)"
    port = free_port()
    conf = write_configs(
        REPO / "nginx" / "gateway.conf.template",
        state,
        {
            "GATEWAY_LISTEN": f"127.0.0.1:{port}",
            "GATE_UPSTREAM": gate_upstream,
            "MLFLOW_UPSTREAM": mlflow_upstream,
            "MLFLOW_HOST_HEADER": MLFLOW_HOST_HEADER,
            **(extra or {}),
        },
    )
    error_log = state / "error.log"
    with running([nginx, "-p", str(state), "-e", str(error_log), "-c", str(conf)], port, error_log):
        yield port


@contextmanager
def gate(state: Path, settings: dict[str, str]) -> Iterator[int]:
    """A second gate process from the working tree with the given GATE_* settings; yields its port."""
    port = free_port()
    env = {**os.environ, **settings, "GATE_HOST": "127.0.0.1", "GATE_PORT": str(port)}
    with running([sys.executable, "-m", "authz_service"], port, state / "gate.log", env):
        yield port
