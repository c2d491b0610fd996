"""`whoami`: who the configured credentials are, read from the access token the realm just issued.

The claims are decoded without checking the signature: the token came straight from the realm's
token endpoint, the gate verifies it on every request, and here it is only shown to its owner.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from .client_credentials import ClientCredentials
from .realm import SignInError, Tokens
from .stored_signin import StoredSignIn


def claims_of(access_token: str) -> dict[str, Any]:
    try:
        payload = access_token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError) as error:
        raise SignInError(f"the realm's access token is not a JWT ({error})") from None
    if not isinstance(claims, dict):
        raise SignInError("the realm's access token carries no claims object")
    return claims


def whoami(source: StoredSignIn | ClientCredentials, now: float | None = None) -> dict[str, Any]:
    """The identity facts, as plain data for `--json` and for the human listing."""
    tokens: Tokens = source.tokens()
    now = time.time() if now is None else now
    claims = claims_of(tokens.access_token)
    roles = claims.get("realm_access", {}).get("roles", [])
    return {
        "mode": source.mode,
        "realm": source.realm.url,
        "client_id": source.realm.client_id,
        "username": claims.get("preferred_username"),
        "email": claims.get("email"),
        "subject": claims.get("sub"),
        "roles": sorted(role for role in roles if isinstance(role, str)),
        "audience": claims.get("aud"),
        "access_token_expires_at": _iso(tokens.access_expires_at),
        "access_token_expires_in": round(tokens.access_expires_at - now),
        "sign_in_ends_by": (
            _iso(tokens.refresh_expires_at)
            if isinstance(source, StoredSignIn) and tokens.refresh_expires_at is not None
            else None
        ),
        "credentials_file": str(source.store.path) if isinstance(source, StoredSignIn) else None,
    }


def render(facts: dict[str, Any]) -> str:
    who = facts["username"] or facts["subject"] or "(no name in the token)"
    if facts["email"]:
        who += f" <{facts['email']}>"
    lines = [
        ("signed in as", who),
        ("roles", ", ".join(facts["roles"]) or "(none)"),
        ("mode", f"{facts['mode']} (client {facts['client_id']})"),
        ("realm", facts["realm"]),
        ("access token", f"expires {facts['access_token_expires_at']} (in {facts['access_token_expires_in']} s)"),
    ]
    if facts["sign_in_ends_by"]:
        lines.append(("sign-in", f"ends {facts['sign_in_ends_by']} if unused until then (use extends it)"))
    if facts["credentials_file"]:
        lines.append(("stored in", facts["credentials_file"]))
    return "\n".join(f"{label:13} {value}" for label, value in lines)


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))
