"""Cross-site protection for requests that the session cookie authorizes.

A browser attaches the gate's cookie to requests that other sites make it send, so a state-changing
request is only accepted with the cookie when the browser itself says it comes from the gateway's
own page: `Origin` equal to the gateway's public origin (scheme, host and port exactly), or, when a
browser sends no `Origin`, `Sec-Fetch-Site: same-origin`. MLflow's own origin rules trust any
localhost origin, so the gate does not lean on them. Bearer and Basic credentials are never attached
by a browser on its own, so they are not checked here.
"""

from __future__ import annotations

from urllib.parse import urlsplit

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def public_origin(public_url: str) -> str:
    """The gateway's origin as a browser serialises it: lower-case, default port left out."""
    parts = urlsplit(public_url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    if port is None or port == _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def cross_site_refusal(method: str, origin: str | None, fetch_site: str | None, expected: str) -> str | None:
    """Why a cookie-authorized request must be refused, or None when it may proceed."""
    if method.upper() in SAFE_METHODS:
        return None
    if origin is not None:
        if origin == expected:
            return None
        return f"cross-site request refused: Origin {origin} is not {expected}"
    if fetch_site == "same-origin":
        return None
    if fetch_site is None:
        return "cross-site request refused: the browser sent neither Origin nor Sec-Fetch-Site"
    return f"cross-site request refused: Sec-Fetch-Site is {fetch_site}"
