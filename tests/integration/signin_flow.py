"""The browser sign-in walked with plain HTTP, so tests can replay and tamper with each step."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import httpx

FORM_ACTION = re.compile(r'<form[^>]*id="kc-form-login"[^>]*action="([^"]+)"')


@dataclass(frozen=True)
class Callback:
    """Where Keycloak sent the browser back: the gate's callback URL with code and state."""

    url: str
    code: str
    state: str


def start(gateway: httpx.Client, return_to: str = "/") -> str:
    """Begin a sign-in at the gate; returns the Keycloak authorization URL."""
    response = gateway.get("/oauth2/start", params={"rd": return_to, "go": "1"})
    assert response.status_code == 302, response.text
    return response.headers["location"]


def log_in(authorization_url: str, username: str, password: str) -> Callback:
    """Fill in Keycloak's real login form; returns the redirect back to the gate."""
    with httpx.Client(follow_redirects=False, timeout=30) as browser:
        form_page = browser.get(authorization_url)
        match = FORM_ACTION.search(form_page.text)
        assert match, "Keycloak login form not found"
        # Keycloak marks its login cookies Secure; browsers still send them to a loopback
        # address over http, http.cookiejar does not, so they are passed on explicitly.
        cookies = "; ".join(f"{name}={value}" for name, value in form_page.cookies.items())
        response = browser.post(
            html.unescape(match.group(1)),
            data={"username": username, "password": password, "credentialId": ""},
            headers={"Cookie": cookies},
        )
        assert response.status_code == 302, response.text[:500]
        location = response.headers["location"]
    query = parse_qs(urlsplit(location).query)
    return Callback(location, query["code"][0], query["state"][0])


def finish(gateway: httpx.Client, callback: Callback) -> httpx.Response:
    parts = urlsplit(callback.url)
    return gateway.get(f"{parts.path}?{parts.query}")
