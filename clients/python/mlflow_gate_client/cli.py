"""`mlflow-gate-client login | logout | token | whoami` (also `python -m mlflow_gate_client`)."""

from __future__ import annotations

import argparse
import json
import os
import sys

import requests

from .client_credentials import ClientCredentials
from .identity import render, whoami
from .realm import SignInError
from .settings import ClientSettings


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="mlflow-gate-client",
        description="Sign the MLflow client in to an MLflow gate (configured by MLFLOW_GATE_* variables).",
    )
    verbs = top.add_subparsers(dest="verb", required=True, metavar="VERB")
    verbs.add_parser("login", help="sign in with the device flow (a robot: check its client credentials)")
    verbs.add_parser("logout", help="end the stored sign-in at the realm and forget its tokens")
    verbs.add_parser("token", help="print a current access token (for curl)")
    who = verbs.add_parser("whoami", help="who these credentials are, their roles and token expiry")
    who.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        source = ClientSettings.from_env(os.environ).token_source(requests.Session())
        if args.verb == "login":
            source.tokens(interactive=True)
            if isinstance(source, ClientCredentials):
                print(f"The realm accepted the client credentials of {source.realm.client_id}.", file=sys.stderr)
            else:
                print("Signed in. Use it with: export MLFLOW_TRACKING_AUTH=mlflow-gate", file=sys.stderr)
        elif args.verb == "logout":
            if isinstance(source, ClientCredentials):
                print("Client credentials keep nothing to sign out of.", file=sys.stderr)
            elif not source.sign_out():
                print("Forgot the tokens here; the realm could not be told to end the session.", file=sys.stderr)
        elif args.verb == "token":
            print(source.access_token())
        else:
            facts = whoami(source)
            print(json.dumps(facts, indent=2) if args.json else render(facts))
    except SignInError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
