"""`user list|create|disable|enable|delete|set-password`: the people who sign in to MLflow.

Passwords never travel as arguments (visible in `ps` and shell history): they come from standard
input (`--password-stdin`) or a terminal prompt.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from keycloak import KeycloakAdmin
from keycloak.exceptions import KeycloakPostError

from . import output
from .connection import Session
from .errors import AdminError
from .realm import check_role_name, find_user, gate_role, gate_roles_of
from .signout import end_sessions

LIST_COLUMNS = ("username", "enabled", "email", "name", "roles")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("user", help="list, create, disable, enable, delete users; set passwords")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    listing = verbs.add_parser("list", help="users with their gate roles")
    listing.add_argument("--search", help="only users whose name, email or user name contains this text")
    listing.add_argument("--max", type=int, default=100, help="at most this many users (default 100)")
    output.add_json_flag(listing)
    listing.set_defaults(handler=list_users)

    create = verbs.add_parser("create", help="create a user, optionally with roles and a password")
    create.add_argument("username")
    create.add_argument("--email")
    create.add_argument("--first-name")
    create.add_argument("--last-name")
    create.add_argument("--role", action="append", default=[], help="Admin or Default (repeatable)")
    _add_password_flags(create, "set a password read from standard input (first line)")
    create.set_defaults(handler=create_user)

    for verb, handler, text in (
        ("disable", disable_user, "stop a user signing in and end their sessions"),
        ("enable", enable_user, "let a disabled user sign in again"),
        ("delete", delete_user, "delete a user"),
    ):
        command = verbs.add_parser(verb, help=text)
        command.add_argument("username")
        command.set_defaults(handler=handler)

    password = verbs.add_parser("set-password", help="set a user's password (prompted, or from standard input)")
    password.add_argument("username")
    _add_password_flags(password, "read the password from standard input (first line) instead of prompting")
    password.set_defaults(handler=set_password)


def _add_password_flags(parser: argparse.ArgumentParser, text: str) -> None:
    parser.add_argument("--password-stdin", action="store_true", help=text)
    parser.add_argument(
        "--temporary", action="store_true", help="the user must choose a new password at the next sign-in"
    )


def list_users(session: Session, args: argparse.Namespace) -> None:
    if args.max < 1:
        raise AdminError("--max must be at least 1")
    admin = session.admin
    query: dict[str, Any] = {"first": 0, "max": args.max}
    if args.search:
        query["search"] = args.search
    rows = [
        {
            "username": user["username"],
            "enabled": user.get("enabled", False),
            "email": user.get("email"),
            "name": " ".join(filter(None, (user.get("firstName"), user.get("lastName")))),
            "roles": gate_roles_of(admin, user["id"]),
        }
        for user in admin.get_users(query)
    ]
    output.table(rows, LIST_COLUMNS, args.json)


def create_user(session: Session, args: argparse.Namespace) -> None:
    for role in args.role:
        check_role_name(role)
    password = read_password(args) if args.password_stdin else None
    admin = session.admin
    roles = [gate_role(admin, role) for role in args.role]
    payload: dict[str, Any] = {"username": args.username, "enabled": True}
    for key, value in (("email", args.email), ("firstName", args.first_name), ("lastName", args.last_name)):
        if value:
            payload[key] = value
    if args.email:
        payload["emailVerified"] = True
    if password is not None:
        payload["credentials"] = [{"type": "password", "value": password, "temporary": args.temporary}]
    try:
        user_id = admin.create_user(payload)
    except KeycloakPostError as error:
        if error.response_code == 409:
            raise AdminError(f"user {args.username!r} (or their email) already exists") from None
        raise
    if roles:
        try:
            admin.assign_realm_roles(user_id, roles)
        except Exception:
            admin.delete_user(user_id)
            raise
    held = ", ".join(args.role) or "no role"
    print(f"created user {args.username} ({held}{'' if password else ', no password'})")


def disable_user(session: Session, args: argparse.Namespace) -> None:
    admin, user = _named_user(session, args)
    admin.disable_user(user["id"])
    print(f"disabled user {user['username']} and ended {end_sessions(admin, user['id'])} session(s)")


def enable_user(session: Session, args: argparse.Namespace) -> None:
    admin, user = _named_user(session, args)
    admin.enable_user(user["id"])
    print(f"enabled user {user['username']}")


def delete_user(session: Session, args: argparse.Namespace) -> None:
    admin, user = _named_user(session, args)
    admin.delete_user(user["id"])
    print(f"deleted user {user['username']}")


def set_password(session: Session, args: argparse.Namespace) -> None:
    password = read_password(args)
    admin, user = _named_user(session, args)
    admin.set_user_password(user["id"], password, temporary=args.temporary)
    print(f"set the {'temporary ' if args.temporary else ''}password of {user['username']}")


def _named_user(session: Session, args: argparse.Namespace) -> tuple[KeycloakAdmin, dict[str, Any]]:
    admin = session.admin
    return admin, find_user(admin, args.username)


def read_password(args: argparse.Namespace) -> str:
    """The first line of standard input, or a password typed twice at a terminal."""
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = getpass.getpass("New password: ")
        if getpass.getpass("Repeat it: ") != password:
            raise AdminError("the two passwords differ; nothing changed")
    else:
        raise AdminError("no password: pipe it with --password-stdin, or run in a terminal to be prompted")
    if not password:
        raise AdminError("empty password; nothing changed")
    return password
