"""Which cookie-authorized requests count as coming from the gateway's own pages."""

from __future__ import annotations

import pytest

from authz_service.origin import cross_site_refusal, public_origin

OWN = "https://mlflow.example.org"


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://MLflow.Example.org/", "https://mlflow.example.org"),
        ("https://mlflow.example.org:443", "https://mlflow.example.org"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("http://gateway:80/mlflow", "http://gateway"),
    ],
)
def test_public_origin_is_serialised_like_a_browser_does(url: str, origin: str) -> None:
    assert public_origin(url) == origin


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "get"])
def test_safe_methods_pass_whatever_their_origin(method: str) -> None:
    assert cross_site_refusal(method, "https://evil.example", "cross-site", OWN) is None


@pytest.mark.parametrize(
    ("origin", "fetch_site"),
    [(OWN, None), (OWN, "same-origin"), (None, "same-origin")],
)
def test_same_origin_state_changes_pass(origin: str | None, fetch_site: str | None) -> None:
    assert cross_site_refusal("POST", origin, fetch_site, OWN) is None


@pytest.mark.parametrize(
    ("origin", "fetch_site"),
    [
        ("https://evil.example", "cross-site"),
        ("null", None),
        ("https://mlflow.example.org:8443", "same-site"),
        ("http://mlflow.example.org", None),
        ("https://mlflow.example.org.evil.example", None),
        ("https://sub.mlflow.example.org", "same-site"),
        # Origin wins over a Sec-Fetch-Site that claims otherwise.
        ("https://evil.example", "same-origin"),
        (None, "same-site"),
        (None, "cross-site"),
        (None, "none"),
        (None, None),
    ],
)
def test_other_origins_and_silent_requests_are_refused(origin: str | None, fetch_site: str | None) -> None:
    for method in ("POST", "PATCH", "PUT", "DELETE"):
        reason = cross_site_refusal(method, origin, fetch_site, OWN)
        assert reason is not None and reason.startswith("cross-site request refused")
