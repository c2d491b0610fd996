"""`python -m mlflow_gate_client login | logout | token`."""

from __future__ import annotations

import sys

from .credentials import SignInError
from .provider import credentials_from_env

USAGE = "usage: python -m mlflow_gate_client login | logout | token"


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ("login", "logout", "token"):
        print(USAGE, file=sys.stderr)
        return 2
    try:
        credentials = credentials_from_env()
        if argv[0] == "logout":
            credentials.sign_out()
        elif argv[0] == "login":
            credentials.access_token()
            print("Signed in. Use it with: export MLFLOW_TRACKING_AUTH=mlflow-gate", file=sys.stderr)
        else:
            print(credentials.access_token(interactive=False))
    except SignInError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
