"""The production compose file (deploy/compose/docker-compose.prod.yml): it parses, takes every
secret from the environment with no default, pins its images, mounts only files that exist, runs
Keycloak in production mode on PostgreSQL without demo users, and its NGINX configuration,
rendered the way the nginx image renders it, passes the real `nginx -t` with TLS on.

Docker is not needed: compose's `${VAR:?message}` interpolation is applied here.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz_service.settings import Settings

from stack import nginx as stack_nginx

from .deployment_checks import is_pinned, nginx_config_test, self_signed_certificate

pytestmark = pytest.mark.integration

COMPOSE_DIR = Path(__file__).resolve().parents[2] / "deploy" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.prod.yml"
ENV_EXAMPLE = COMPOSE_DIR / "prod.env.example"
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)([^}]*)\}")


def interpolate(text: str, environment: Mapping[str, str]) -> str:
    """Compose's interpolation for the forms the file may use: ${NAME:?message} and $$."""

    def value(match: re.Match[str]) -> str:
        name, modifier = match.groups()
        assert modifier.startswith(":?"), f"${{{name}{modifier}}} must be required (${{{name}:?...}})"
        assert environment.get(name), f"{name} is unset"
        return environment[name]

    return VARIABLE.sub(value, text.replace("$$", "\0")).replace("\0", "$")


@pytest.fixture(scope="module")
def environment(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Every variable of prod.env.example, with throwaway certificates and secrets (as long as real ones)."""
    certificates = tmp_path_factory.mktemp("certificates")
    gateway_cert, gateway_key = self_signed_certificate(certificates, "gateway")
    keycloak_cert, keycloak_key = self_signed_certificate(certificates, "keycloak")
    files = {
        "GATEWAY_TLS_CERT": gateway_cert,
        "GATEWAY_TLS_KEY": gateway_key,
        "KEYCLOAK_TLS_CERT": keycloak_cert,
        "KEYCLOAK_TLS_KEY": keycloak_key,
    }
    example = dict(
        line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if line and not line.startswith("#")
    )
    return {
        name: str(files[name]) if name in files else default or f"test-{name.lower()}-{secrets.token_hex(16)}"
        for name, default in example.items()
    }


@pytest.fixture(scope="module")
def compose(environment: dict[str, str]) -> dict[str, Any]:
    return yaml.safe_load(interpolate(COMPOSE_FILE.read_text(), environment))


def test_every_variable_is_required_and_listed_in_the_example(environment: dict[str, str]) -> None:
    used = {name for name, _ in VARIABLE.findall(COMPOSE_FILE.read_text())}
    assert used == set(environment)
    for name, modifier in VARIABLE.findall(COMPOSE_FILE.read_text()):
        assert modifier.startswith(":?"), f"{name} has a default or may be empty"


def test_unset_secret_is_refused(environment: dict[str, str]) -> None:
    missing = {name: value for name, value in environment.items() if name != "MLFLOW_GATE_CLIENT_SECRET"}
    with pytest.raises(AssertionError, match="MLFLOW_GATE_CLIENT_SECRET is unset"):
        interpolate(COMPOSE_FILE.read_text(), missing)


def test_images_are_pinned(compose: dict[str, Any]) -> None:
    images = [service["image"] for service in compose["services"].values() if "image" in service]
    for service in (s for s in compose["services"].values() if "build" in s):
        dockerfile = COMPOSE_DIR / service["build"]["context"] / service["build"]["dockerfile"]
        images += re.findall(r"^FROM\s+(\S+)", dockerfile.read_text(), re.MULTILINE)
    assert len(images) == len(compose["services"])
    assert all(is_pinned(image) for image in images), images


def bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path of the service's bind mounts (named volumes left out)."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts[target] = (COMPOSE_DIR / source).resolve()
    return mounts


def test_every_mounted_file_exists(compose: dict[str, Any], environment: dict[str, str]) -> None:
    mounts = [path for service in compose["services"].values() for path in bind_mounts(service).values()]
    certificates = {Path(value) for name, value in environment.items() if name.endswith(("_CERT", "_KEY"))}
    assert len(certificates) == 4 and certificates <= set(mounts)
    for path in mounts:
        assert path.is_file(), f"{path} is mounted but missing"


def test_keycloak_runs_in_production_mode_on_postgresql_without_demo_users(compose: dict[str, Any]) -> None:
    keycloak = compose["services"]["keycloak"]
    assert keycloak["command"][0] == "start"
    assert keycloak["environment"]["KC_DB"] == "postgres"
    assert keycloak["environment"]["KC_DB_URL"].startswith("jdbc:postgresql://postgres:")
    assert keycloak["environment"]["KC_HOSTNAME"].startswith("https://")
    imported = [target for target in bind_mounts(keycloak) if target.startswith("/opt/keycloak/data/import/")]
    assert imported == ["/opt/keycloak/data/import/mlflow-realm.json"]
    mlflow = compose["services"]["mlflow"]
    assert mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://mlflow:")
    assert not any("sqlite" in str(argument) for argument in mlflow["command"])


def test_only_the_gateway_and_keycloak_are_published_and_only_over_tls(compose: dict[str, Any]) -> None:
    published = {name: service["ports"] for name, service in compose["services"].items() if service.get("ports")}
    assert published == {"nginx": ["443:8443"], "keycloak": ["8443:8443"]}


def test_gate_environment_passes_the_gates_settings_validation(compose: dict[str, Any]) -> None:
    settings = Settings.from_env(compose["services"]["gate"]["environment"])
    assert settings.public_url and settings.public_url.startswith("https://")
    assert settings.sso_enabled and settings.redis_url and settings.basic_enabled


def test_rendered_nginx_config_passes_nginx_t_with_tls(compose: dict[str, Any], tmp_path: Path) -> None:
    nginx = compose["services"]["nginx"]
    template = bind_mounts(nginx)["/etc/nginx/templates/default.conf.template"]
    conf = stack_nginx.render_template(template.read_text(), nginx["environment"])
    assert "ssl" in nginx["environment"]["GATEWAY_LISTEN"].split()
    # The certificate paths NGINX opens are the container paths the compose file mounts.
    for target, source in bind_mounts(nginx).items():
        conf = conf.replace(f" {target};", f" {source};")
    assert "ssl_certificate " in conf
    result = nginx_config_test(conf, tmp_path)
    assert result.returncode == 0, result.stderr
