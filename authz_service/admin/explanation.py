"""Why the gate would allow or refuse one request for one user, step by step.

This mirrors the order of `checks.Checker`: the route first (public, refused, or one
`resource#scope`), then the user, then Keycloak's decision. Keycloak is only asked when the route
needs a permission and the user could hold a token at all; the verdict assumes the user presents a
token issued now (an older token carries the roles it was issued with).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..routes import Permission, Public, Refusal, Rule


@dataclass(frozen=True)
class Subject:
    username: str
    enabled: bool
    roles: tuple[str, ...]


@dataclass(frozen=True)
class Evaluation:
    """Keycloak's policy evaluation for one permission: the overall status and each policy's."""

    status: str
    policies: tuple[tuple[str, str], ...]

    @property
    def permitted(self) -> bool:
        return self.status == "PERMIT"


@dataclass(frozen=True)
class Explanation:
    request: str
    rule: str | None
    source: str | None
    permission: str
    user: str
    enabled: bool
    roles: tuple[str, ...]
    keycloak: Evaluation | None
    status: int
    verdict: str

    def fields(self) -> dict[str, Any]:
        """Plain data for `--json` and for the `key  value` lines of the text output."""
        keycloak: dict[str, Any] | None = None
        if self.keycloak is not None:
            keycloak = {
                "status": self.keycloak.status,
                "policies": [{"name": name, "status": status} for name, status in self.keycloak.policies],
            }
        return {
            "request": self.request,
            "rule": self.rule,
            "source": self.source,
            "permission": self.permission,
            "user": self.user,
            "enabled": self.enabled,
            "roles": list(self.roles),
            "keycloak": keycloak,
            "status": self.status,
            "verdict": self.verdict,
        }

    def summary(self) -> dict[str, Any]:
        """The text form: one line per step, Keycloak's policies on one line."""
        if self.keycloak is None:
            keycloak = "not asked"
        else:
            policies = "; ".join(f"{name}: {status}" for name, status in self.keycloak.policies)
            keycloak = f"{self.keycloak.status} ({policies})" if policies else self.keycloak.status
        return {
            "request": self.request,
            "rule": self.rule,
            "source": self.source,
            "permission": self.permission,
            "user": f"{self.user} ({'enabled' if self.enabled else 'disabled'})",
            "roles": list(self.roles),
            "keycloak": keycloak,
            "verdict": f"{self.status} {self.verdict}",
        }


def request_target(url: str) -> str:
    """What a client sends on the request line for `url`: the raw path and query, never a fragment.

    A full URL is reduced to its path and query; anything else is taken as the raw request target,
    so ambiguous spellings (`%2F`, `..`, `;`) reach the route map exactly as typed.
    """
    parts = urlsplit(url)
    if parts.scheme and parts.netloc:
        return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return url


def explain(
    method: str,
    target: str,
    found: Rule | Refusal,
    subject: Subject,
    evaluate: Callable[[Permission], Evaluation],
) -> Explanation:
    """The explanation for `method target` as decided by `found`; `evaluate` asks Keycloak."""
    rule = found if isinstance(found, Rule) else None
    classification = found.classification if isinstance(found, Rule) else found
    base = {
        "request": f"{method} {target}",
        "rule": rule.text if rule else None,
        "source": rule.source if rule else None,
        "user": subject.username,
        "enabled": subject.enabled,
        "roles": subject.roles,
    }
    if isinstance(classification, Public):
        return Explanation(**base, permission="public", keycloak=None, status=200, verdict="allowed without a token")
    if isinstance(classification, Refusal):
        return Explanation(
            **base, permission="none", keycloak=None, status=403, verdict=f"refused for everyone: {classification.reason}"
        )
    permission = str(classification)
    if not subject.enabled:
        return Explanation(
            **base,
            permission=permission,
            keycloak=None,
            status=401,
            verdict=f"refused: user {subject.username} is disabled and gets no token",
        )
    evaluation = evaluate(classification)
    if evaluation.permitted:
        return Explanation(**base, permission=permission, keycloak=evaluation, status=200, verdict="allowed")
    return Explanation(
        **base,
        permission=permission,
        keycloak=evaluation,
        status=403,
        verdict=f"refused: user {subject.username} lacks permission {permission}",
    )
