"""`role grant|revoke USER ROLE`: give or take the gate's realm roles (Admin, Default).

Both are idempotent, so scripts can run them again safely. A revoke that cannot take effect (the
role comes through a group or a composite role) is an error rather than a silent no-op.
"""

from __future__ import annotations

import argparse

from .connection import Session
from .errors import AdminError
from .realm import GATE_ROLES, check_role_name, find_user, gate_role, gate_roles_of

def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("role", help="grant or revoke the Admin and Default roles")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb, handler in (("grant", grant), ("revoke", revoke)):
        command = verbs.add_parser(verb, help=f"{verb} a role ({', '.join(GATE_ROLES)})")
        command.add_argument("username")
        command.add_argument("role", help=" or ".join(GATE_ROLES))
        command.set_defaults(handler=handler)


def grant(session: Session, args: argparse.Namespace) -> None:
    check_role_name(args.role)
    admin = session.admin
    role = gate_role(admin, args.role)
    user = find_user(admin, args.username)
    if role["name"] in gate_roles_of(admin, user["id"]):
        print(f"{user['username']} already holds {role['name']}; nothing changed")
        return
    admin.assign_realm_roles(user["id"], [role])
    print(f"granted {role['name']} to {user['username']} (the gates apply it within 10 seconds)")


def revoke(session: Session, args: argparse.Namespace) -> None:
    check_role_name(args.role)
    admin = session.admin
    role = gate_role(admin, args.role)
    user = find_user(admin, args.username)
    direct = {held["name"] for held in admin.get_realm_roles_of_user(user["id"])}
    if role["name"] not in direct:
        if role["name"] in gate_roles_of(admin, user["id"]):
            raise AdminError(
                f"{user['username']} holds {role['name']} through a group or a composite role; remove it there"
            )
        print(f"{user['username']} does not hold {role['name']}; nothing changed")
        return
    admin.delete_realm_roles_of_user(user["id"], [role])
    print(f"revoked {role['name']} from {user['username']}")
