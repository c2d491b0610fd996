"""`python -m authz_service.role_table [EXTRA_MAP ...]`: the README's "what each role may do" tables.

Generated from the route map, so the documentation cannot drift from what the gate enforces. The
grants below mirror the permissions of the Keycloak realm: Admin has every scope on every resource,
Default has read, create and update on every resource except administration, and a signed-in user
without either role has none.
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from .routes import API_PREFIXES, METHODS, SCOPES_BY_RESOURCE, Permission, Public, RouteMap, Rule

ROLE_GRANTS: dict[str, dict[str, frozenset[str]]] = {
    "Admin": dict(SCOPES_BY_RESOURCE),
    "Default": {
        resource: scopes - {"delete"} for resource, scopes in SCOPES_BY_RESOURCE.items() if resource != "administration"
    },
    "No role": {},
}
SCOPE_ORDER = ("read", "create", "update", "delete", "manage")


def may(role: str, permission: Permission) -> bool:
    return permission.scope in ROLE_GRANTS[role].get(permission.resource, frozenset())


def _display_paths(rules: Sequence[Rule]) -> list[str]:
    """`METHODS path` per rule group, an /api + /ajax-api pair shown once as its RPC path."""
    methods_by_path: dict[str, set[str]] = defaultdict(set)
    spelled = {(rule.method, rule.pattern) for rule in rules}
    for rule in rules:
        path = rule.pattern
        for prefix in API_PREFIXES:
            rest = path.removeprefix(prefix)
            twins = {(rule.method, other + rest) for other in API_PREFIXES}
            if rest != path and re.match(r"/[0-9]+\.[0-9]+/", rest) and twins <= spelled:
                path = rest
        methods_by_path[path].add(rule.method)
    return [
        f"{','.join(method for method in METHODS if method in methods)} {path}"
        for path, methods in sorted(methods_by_path.items())
    ]


def roles_table() -> str:
    roles = list(ROLE_GRANTS)
    lines = ["| Resource | " + " | ".join(roles) + " |", "|---" * (len(roles) + 1) + "|"]
    for resource, scopes in SCOPES_BY_RESOURCE.items():
        cells = []
        for role in roles:
            granted = ROLE_GRANTS[role].get(resource, frozenset()) & scopes
            cells.append(", ".join(scope for scope in SCOPE_ORDER if scope in granted) or "-")
        lines.append(f"| `{resource}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def routes_table(route_map: RouteMap) -> str:
    roles = list(ROLE_GRANTS)
    by_permission: dict[Permission | Public, list[Rule]] = defaultdict(list)
    for rule in route_map.rules:
        if isinstance(rule.classification, Permission | Public):
            by_permission[rule.classification].append(rule)

    def order(permission: Permission | Public) -> tuple[int, str, int]:
        if isinstance(permission, Public):
            return (0, "", 0)
        return (1, permission.resource, SCOPE_ORDER.index(permission.scope))

    lines = ["| Permission | " + " | ".join(roles) + " | Routes |", "|---" * (len(roles) + 2) + "|"]
    for permission in sorted(by_permission, key=order):
        if isinstance(permission, Public):
            label, allowed = "public (no token)", ["yes"] * len(roles)
        else:
            label, allowed = f"`{permission}`", ["yes" if may(role, permission) else "no" for role in roles]
        routes = "<br>".join(f"`{route}`" for route in _display_paths(by_permission[permission]))
        lines.append(f"| {label} | " + " | ".join(allowed) + f" | {routes} |")
    return "\n".join(lines)


def render(route_map: RouteMap) -> str:
    return (
        "### What each role may do\n\n"
        + roles_table()
        + "\n\n### Which permission each MLflow route needs\n\n"
        + "Paths starting with a version (`/2.0/...`) are served under both `/api` and `/ajax-api`; "
        + "HEAD counts as GET; any route not listed is refused.\n\n"
        + routes_table(route_map)
        + "\n"
    )


def main(argv: Sequence[str]) -> int:
    sys.stdout.write(render(RouteMap.load([Path(name) for name in argv])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
