"""Load generation with wrk, and what a process group spent (CPU, memory) while it ran."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = 100  # USER_HZ on Linux: /proc/<pid>/stat counts CPU time in these
PAGE_KIB = 4


@dataclass(frozen=True)
class Run:
    """One wrk measurement: requests/s and latency percentiles (ms); errors are non-2xx/3xx or socket errors."""

    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


@dataclass(frozen=True)
class Load:
    connections: int = 32
    threads: int = 2
    seconds: float = 10.0
    warmup: float = 3.0
    timeout: float = 2.0


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS_MS[unit]


def parse_wrk(output: str) -> Run:
    requests, seconds = re.search(r"(\d+) requests in ([\d.]+)(\w+)", output).groups()[:2]  # type: ignore[union-attr]
    duration = float(seconds) * (60 if re.search(r"requests in [\d.]+m,", output) else 1)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors += int(non_2xx.group(1)) if non_2xx else 0
    return Run(
        requests=int(requests),
        seconds=duration,
        rps=float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),  # type: ignore[union-attr]
        p50_ms=_ms(p50.group(1)) if p50 else float("nan"),
        p99_ms=_ms(p99.group(1)) if p99 else float("nan"),
        errors=errors,
    )


def _command(headers: Mapping[str, str], load: Load, script: Path | None) -> list[str]:
    command = ["wrk", f"-t{load.threads}", f"-c{load.connections}", "--latency", f"--timeout={load.timeout:g}s"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    return command + (["-s", str(script)] if script is not None else [])


def warm_up(url: str, headers: Mapping[str, str], load: Load, script: Path | None = None) -> None:
    if load.warmup > 0:
        command = [*_command(headers, load, script), f"-d{load.warmup:g}s", url]
        subprocess.run(command, capture_output=True, check=True)


def measured(url: str, headers: Mapping[str, str], load: Load, script: Path | None = None) -> Run:
    command = [*_command(headers, load, script), f"-d{load.seconds:g}s", url]
    return parse_wrk(subprocess.run(command, capture_output=True, text=True, check=True).stdout)


def group_pids(leader: int) -> list[int]:
    """The leader and every process in its process group (uvicorn workers, MLflow's gunicorn)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[2] == str(leader):
            pids.append(int(stat.parent.name))
    return pids or [leader]


def cpu_seconds(pids: Sequence[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def rss_mib(pid: int) -> float:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KIB / 1024
    except OSError:
        return 0.0


@dataclass
class Usage:
    """CPU seconds used by the watched processes, and the largest RSS one of them reached (MiB)."""

    cpu: float = 0.0
    max_rss_mib: float = 0.0


@contextmanager
def watched(leader: int) -> Iterator[Usage]:
    """Measures the process group of `leader` while the block runs (RSS sampled twice a second)."""
    pids = group_pids(leader)
    usage = Usage()
    before = cpu_seconds(pids)
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            usage.max_rss_mib = max([usage.max_rss_mib, *(rss_mib(pid) for pid in pids)])
            stop.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield usage
    finally:
        stop.set()
        sampler.join()
        usage.cpu = cpu_seconds(pids) - before


def wait_until(probe: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():  # type: ignore[operator]
            return
        time.sleep(0.3)
    raise RuntimeError(f"{what} not ready after {timeout:.0f} s")
