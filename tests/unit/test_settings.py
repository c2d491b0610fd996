from __future__ import annotations

import pytest

from authz_service.settings import Settings, SettingsError

MINIMAL = {"GATE_KEYCLOAK_URL": "http://127.0.0.1:8180/"}


def test_defaults_from_the_minimal_environment() -> None:
    settings = Settings.from_env(MINIMAL)
    assert settings.keycloak_url == "http://127.0.0.1:8180"
    assert settings.issuer == "http://127.0.0.1:8180/realms/mlflow"
    assert settings.token_url == "http://127.0.0.1:8180/realms/mlflow/protocol/openid-connect/token"
    assert settings.jwks_url == "http://127.0.0.1:8180/realms/mlflow/protocol/openid-connect/certs"
    assert settings.audience == settings.client_id == "mlflow-gate"
    assert settings.redis_url is None
    assert settings.cache_max_ttl == 60.0
    assert settings.sso_enabled is False


def test_issuer_follows_the_public_keycloak_url() -> None:
    settings = Settings.from_env(
        {
            "GATE_KEYCLOAK_URL": "http://keycloak:8080",
            "GATE_KEYCLOAK_PUBLIC_URL": "https://sso.example.org",
            "GATE_REALM": "ml",
        }
    )
    assert settings.issuer == "https://sso.example.org/realms/ml"
    assert settings.jwks_url.startswith("http://keycloak:8080/realms/ml/")


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(
            {
                "GATE_CACHE_MAX_TTL": "-1",
                "GATE_CACHE_SIZE": "many",
                "GATE_REDIS_URL": "http://redis",
                "GATE_PORT": "70000",
                "GATE_LOG_LEVEL": "loud",
                "GATE_ROUTE_MAP_EXTRA": "/nonexistent/map.txt",
                "GATE_PUBLIC_URL": "gateway.example.org",
            }
        )
    problems = "\n".join(raised.value.problems)
    for name in (
        "GATE_KEYCLOAK_URL is required",
        "GATE_CACHE_MAX_TTL",
        "GATE_CACHE_SIZE",
        "GATE_REDIS_URL",
        "GATE_PORT",
        "GATE_LOG_LEVEL",
        "GATE_ROUTE_MAP_EXTRA",
        "GATE_PUBLIC_URL",
    ):
        assert name in problems
    assert len(raised.value.problems) == 8


def test_extra_route_maps_must_exist(tmp_path) -> None:
    extra = tmp_path / "extra.txt"
    extra.write_text("")
    settings = Settings.from_env({**MINIMAL, "GATE_ROUTE_MAP_EXTRA": str(extra)})
    assert settings.route_map_extra == (extra,)


def test_revocation_polls_every_two_seconds_when_the_gate_has_its_service_account() -> None:
    assert Settings.from_env(MINIMAL).revocation_enabled is False
    settings = Settings.from_env({**MINIMAL, "GATE_CLIENT_SECRET": "s"})
    assert settings.revocation_enabled is True
    assert (settings.revocation_poll, settings.revocation_max_delay) == (2.0, 10.0)
    assert Settings.from_env({**MINIMAL, "GATE_CLIENT_SECRET": "s", "GATE_REVOCATION_POLL": "0"}).revocation_enabled is False


@pytest.mark.parametrize(
    ("poll", "max_delay", "problem"),
    [("-1", "10", "GATE_REVOCATION_POLL='-1'"), ("2", "0", "GATE_REVOCATION_MAX_DELAY='0'"), ("10", "10", "must be shorter")],
)
def test_revocation_timing_is_validated(poll: str, max_delay: str, problem: str) -> None:
    with pytest.raises(SettingsError, match=problem):
        Settings.from_env({**MINIMAL, "GATE_REVOCATION_POLL": poll, "GATE_REVOCATION_MAX_DELAY": max_delay})
