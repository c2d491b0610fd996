"""`signout USER`: end every Keycloak session of a user, on every device.

Their refresh tokens stop working at once, so no client or browser session of the gate can get a
new access token; the user has to sign in again.
"""

from __future__ import annotations

import argparse

from keycloak import KeycloakAdmin

from .connection import Session
from .realm import find_user


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("signout", help="end all of a user's sessions")
    parser.add_argument("username")
    parser.set_defaults(handler=sign_out)


def sign_out(session: Session, args: argparse.Namespace) -> None:
    admin = session.admin
    user = find_user(admin, args.username)
    print(f"ended {end_sessions(admin, user['id'])} session(s) of {user['username']}")


def end_sessions(admin: KeycloakAdmin, user_id: str) -> int:
    """Log the user out everywhere; the number of sessions that were open."""
    count = len(admin.get_sessions(user_id))
    admin.user_logout(user_id)
    return count
