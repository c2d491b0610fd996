"""`python3 -m stack up|down|status|test [pytest args]` (see stack/__init__.py)."""

from __future__ import annotations

import sys

from . import commands
from .install import InstallError
from .layout import Layout

USAGE = """usage: python3 -m stack COMMAND

  up                  install what is missing, start Keycloak, Redis, MLflow, the gate and
                      NGINX on loopback, write .stack/stack.json (restarts a running stack)
  up --replicas       the replica topology instead: three gates, two NGINX, two MLflow on a
                      shared PostgreSQL and artifact root, one Redis, one Keycloak
  down                stop everything `up` started (idempotent)
  status              health of each component; exit 0 only if all are healthy
  test [pytest args]  ensure the venv, then run pytest from the repository root
                      (integration fixtures start the stack themselves if needed)

Downloads and the venv are cached in ~/.cache/mlflow-gate (override: MLFLOW_GATE_CACHE);
state, logs and rendered configs live in <repo>/.stack/.
"""


def main(argv: list[str]) -> int:
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    layout = Layout.discover()
    try:
        # pytest owns everything after `test`, including options such as -k or -x.
        if command == "test":
            return commands.test(layout, rest)
        if command == "up" and rest in ([], ["--replicas"]):
            return commands.up(layout, with_replicas=bool(rest))
        if command == "down" and not rest:
            return commands.down(layout)
        if command == "status" and not rest:
            return commands.status(layout)
    except InstallError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
