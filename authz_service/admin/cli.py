"""Entry point of `mlflow-gate-admin`: one sub-command per noun, one line per failure.

Each noun module adds its parser with `add_parser(subparsers)` and sets `handler` on every leaf
parser; a handler takes the lazily signed-in Session and the parsed arguments. Anything that goes
wrong is printed as a single `mlflow-gate-admin: error: ...` line with exit code 1 (argparse keeps
its own usage message and exit code 2 for malformed command lines), never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from keycloak.exceptions import KeycloakError

from . import connection, explain, robots, roles, signout, users, workspaces
from .connection import Session
from .errors import AdminError

PROG = "mlflow-gate-admin"
NOUNS = (users, roles, robots, signout, workspaces, explain)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Manage access to MLflow behind the gate: users, roles, robots, sessions, and why "
        "a request is allowed or refused.",
    )
    connection.add_arguments(parser)
    subparsers = parser.add_subparsers(dest="noun", required=True, metavar="COMMAND")
    for noun in NOUNS:
        noun.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.handler(Session(args), args)
    except AdminError as error:
        return _fail(str(error))
    except KeycloakError as error:
        return _fail(connection.describe(error))
    except KeyboardInterrupt:
        return _fail("interrupted")
    return 0


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 1
