"""Start, probe and stop the stack's processes, each in its own process group.

Every process runs in a new session, so `down` can signal the whole group (Keycloak's
shell wrapper and JVM, MLflow's workers) and nothing outlives the stack.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .layout import Layout


class StartError(RuntimeError):
    """A component did not become healthy; the message includes the end of its log."""


@dataclass(frozen=True)
class HttpProbe:
    """Healthy when `url` answers 200."""

    url: str

    def __call__(self) -> bool:
        try:
            with urllib.request.urlopen(self.url, timeout=2.0) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def __str__(self) -> str:
        return self.url


@dataclass(frozen=True)
class RedisProbe:
    """Healthy when Redis answers PING; speaks just enough RESP to need no client library."""

    host: str
    port: int

    def __call__(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=2.0) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def __str__(self) -> str:
        return f"redis://{self.host}:{self.port} PING"


@dataclass(frozen=True)
class CommandProbe:
    """Healthy when `command` exits 0 (PostgreSQL's pg_isready, for instance)."""

    command: tuple[str, ...]

    def __call__(self) -> bool:
        try:
            return subprocess.run(self.command, capture_output=True, timeout=5, check=False).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def __str__(self) -> str:
        return " ".join(self.command)


Probe = HttpProbe | RedisProbe | CommandProbe


def port_in_use(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


@dataclass
class Running:
    """A started process group (its leader is `process`) and where its output goes."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path


def pid_file(layout: Layout, name: str) -> Path:
    return layout.pids / f"{name}.pid"


def start(
    layout: Layout,
    name: str,
    command: Sequence[str],
    log: Path,
    env: Mapping[str, str],
    cwd: Path,
) -> Running:
    """Launch `command` detached in its own session, output appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    layout.pids.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **env}
    with log.open("ab") as output:
        process = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
        )
    pid_file(layout, name).write_text(f"{process.pid} {_start_time(process.pid)}\n")
    return Running(name=name, process=process, log=log)


def _start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot), or None if it is gone.

    A pid file stores it next to the pid, so a pid recycled by an unrelated process never
    matches. (Redis rewrites its environment block for its process title, so an
    environment marker would not survive.)
    """
    fields = _stat(Path(f"/proc/{pid}/stat"))
    return fields[19] if fields and fields[0] != "Z" else None


def _stat(path: Path) -> list[str] | None:
    """Fields of a /proc/<pid>/stat after the command name: state, ppid, pgrp, ..."""
    try:
        return path.read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def alive(layout: Layout, name: str) -> int | None:
    """The pid of the named component if the very process the runner started still runs."""
    try:
        pid_text, started = pid_file(layout, name).read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    return pid if _start_time(pid) == started else None


def wait_healthy(running: Running, probe: Probe, timeout: float) -> float:
    """Poll `probe` until true; fail fast when the process dies. Returns seconds waited."""
    started = time.monotonic()
    while True:
        if probe():
            return time.monotonic() - started
        if running.process.poll() is not None:
            raise StartError(
                f"{running.name} exited during start-up. Last lines of {running.log}:\n{tail(running.log)}"
            )
        if time.monotonic() - started > timeout:
            raise StartError(
                f"{running.name} not healthy after {timeout:.0f} s. Last lines of {running.log}:\n{tail(running.log)}"
            )
        time.sleep(0.5)


def _group_alive(pgid: int) -> bool:
    """True while any non-zombie process is in the group.

    Zombies are ignored: a leader that is not our child is reaped by whatever runs as
    pid 1, which in a container may never happen.
    """
    _reap(pgid)
    for path in Path("/proc").glob("[0-9]*/stat"):
        fields = _stat(path)
        if fields and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


def stop(layout: Layout, name: str, grace: float = 20.0) -> bool:
    """SIGTERM the component's process group, SIGKILL after `grace` s. True if it was running."""
    pid = alive(layout, name)
    pid_file(layout, name).unlink(missing_ok=True)
    if pid is None:
        return False
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _group_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _group_alive(pid):
        _signal_group(pid, signal.SIGKILL)
        while _group_alive(pid):
            time.sleep(0.1)
    return True


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _reap(pid: int) -> None:
    """Collect the leader's exit status when it is our own child (same `up` invocation)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
