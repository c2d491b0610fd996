"""`python3 -m benchmarks [--quick] [--output PATH]`: see benchmarks/__init__.py.

Runs with any python3: it prepares the stack's venv (plus the `bench` extra, MLflow's auth app) and
continues inside it. It reuses this checkout's running stack, or starts one and stops it at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from stack import commands, install, procs
from stack.components import HEALTH
from stack.layout import Layout

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs for development (not for publishing)")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"where to write the report ({RESULTS})")
    parser.add_argument("--pairs", type=int, help="alternating end-to-end pairs per comparison (full: 5, quick: 2)")
    args = parser.parse_args(argv)
    layout = Layout.discover()
    if Path(sys.prefix).resolve() != layout.venv.resolve():
        return _continue_in_venv(layout, argv)
    stack_was_up = _stack_healthy(layout)
    if not stack_was_up and commands.up(layout) != 0:
        return 1
    try:
        return _benchmark(layout, args.quick, args.output, args.pairs)
    finally:
        if not stack_was_up:
            commands.down(layout)


def _stack_healthy(layout: Layout) -> bool:
    """This checkout's stack is running and every component answers its probe."""
    running = all(procs.alive(layout, name) is not None and probe() for name, probe in HEALTH.items())
    return running and layout.stack_json.exists()


def _continue_in_venv(layout: Layout, argv: list[str]) -> int:
    install.ensure_apt_packages({**install.STACK_PACKAGES, "wrk": "wrk"})
    install.ensure_venv(layout)
    probe = subprocess.run([str(layout.venv_python), "-c", "import flask_wtf"], capture_output=True, check=False)
    if probe.returncode != 0:
        print("installing the bench extra (MLflow's basic-auth app) into the venv", flush=True)
        pip = [str(layout.venv_python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        if subprocess.run([*pip, "-e", f"{layout.repo}[bench]"], check=False).returncode != 0:
            print("error: pip install of the bench extra failed", file=sys.stderr)
            return 1
    command = [str(layout.venv_python), "-m", "benchmarks", *argv]
    return subprocess.run(command, cwd=layout.repo, env={**os.environ}, check=False).returncode


def _benchmark(layout: Layout, quick: bool, output: Path, pairs: int | None) -> int:
    from . import report, run

    started = datetime.now(UTC)
    stack = json.loads(layout.stack_json.read_text())
    plan = run.Plan.quick() if quick else run.Plan.full()
    if pairs is not None:
        plan = replace(plan, pairs=pairs)

    def say(text: str) -> None:
        print(f"[{(datetime.now(UTC) - started).total_seconds():5.0f} s] {text}", flush=True)

    results = run.run(layout, stack, plan, say)
    text = report.write(output, layout, results, plan, quick, started)
    print(text)
    if not quick and output == RESULTS:
        report.copy_to_readme(layout.repo / "README.md", text)
        say("copied the tables into README.md (Benchmarks)")
    say(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
