"""Where the admin CLI signs in: flags first, then MLFLOW_GATE_ADMIN_* variables, then defaults.

The password is read from the environment (or a terminal prompt), never from a flag, so it does
not show in `ps` or shell history. Signing in happens once, up front, so a wrong URL or wrong
credentials are reported as such instead of as the failure of whatever command came first.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from urllib.parse import urlsplit

from keycloak import KeycloakAdmin
from keycloak.exceptions import KeycloakAuthenticationError, KeycloakConnectionError, KeycloakError

from .errors import AdminError

ENV_PREFIX = "MLFLOW_GATE_ADMIN_"
TIMEOUT_SECONDS = 30

# flag dest -> (variable suffix, default, help)
_OPTIONS: dict[str, tuple[str, str | None, str]] = {
    "keycloak_url": ("KEYCLOAK_URL", None, "Keycloak base URL, e.g. https://keycloak.example.org"),
    "realm": ("REALM", "mlflow", "the realm the gate protects"),
    "admin_realm": ("ADMIN_REALM", "master", "the realm the administrator signs in to"),
    "admin_user": ("USER", None, "administrator user name (password: MLFLOW_GATE_ADMIN_PASSWORD)"),
    "gate_client": ("GATE_CLIENT", "mlflow-gate", "client id of the gate (resource server, audience)"),
    "ca_file": ("CA_FILE", None, "CA bundle for an https Keycloak with a private CA"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection (flags override MLFLOW_GATE_ADMIN_* variables)")
    for dest, (suffix, default, text) in _OPTIONS.items():
        shown = f"; default {default}" if default else ""
        group.add_argument(
            f"--{dest.replace('_', '-')}", dest=dest, metavar=suffix, help=f"{text} (env {ENV_PREFIX}{suffix}{shown})"
        )


@dataclass(frozen=True)
class ConnectionOptions:
    keycloak_url: str
    realm: str
    admin_realm: str
    admin_user: str
    admin_password: str
    gate_client: str
    ca_file: str | None

    @classmethod
    def resolve(cls, args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> ConnectionOptions:
        env = os.environ if environ is None else environ
        values: dict[str, str | None] = {}
        for dest, (suffix, default, _text) in _OPTIONS.items():
            values[dest] = getattr(args, dest, None) or env.get(ENV_PREFIX + suffix, "").strip() or default
        for dest in ("keycloak_url", "admin_user"):
            if not values[dest]:
                suffix = _OPTIONS[dest][0]
                raise AdminError(f"no {dest.replace('_', ' ')}: pass --{dest.replace('_', '-')} or set {ENV_PREFIX}{suffix}")
        url = str(values["keycloak_url"]).rstrip("/")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise AdminError(f"Keycloak URL {url!r} is not an http(s) base URL such as https://keycloak.example.org")
        return cls(
            keycloak_url=url,
            realm=str(values["realm"]),
            admin_realm=str(values["admin_realm"]),
            admin_user=str(values["admin_user"]),
            admin_password=_admin_password(env),
            gate_client=str(values["gate_client"]),
            ca_file=values["ca_file"],
        )


def _admin_password(env: Mapping[str, str]) -> str:
    password = env.get(ENV_PREFIX + "PASSWORD", "")
    if password:
        return password
    if sys.stdin.isatty():
        return getpass.getpass("Keycloak administrator password: ")
    raise AdminError(f"no administrator password: set {ENV_PREFIX}PASSWORD")


class Session:
    """The resolved options and, on first use, a signed-in python-keycloak `KeycloakAdmin`."""

    def __init__(self, args: argparse.Namespace) -> None:
        self._args = args

    @cached_property
    def options(self) -> ConnectionOptions:
        return ConnectionOptions.resolve(self._args)

    @cached_property
    def admin(self) -> KeycloakAdmin:
        return sign_in(self.options)


def sign_in(options: ConnectionOptions) -> KeycloakAdmin:
    admin = KeycloakAdmin(
        # python-keycloak joins relative paths onto this URL: the slash keeps a path prefix (/auth).
        server_url=options.keycloak_url + "/",
        username=options.admin_user,
        password=options.admin_password,
        realm_name=options.realm,
        user_realm_name=options.admin_realm,
        verify=options.ca_file or True,
        timeout=TIMEOUT_SECONDS,
    )
    where = f"Keycloak at {options.keycloak_url}"
    try:
        admin.connection.get_token()
    except KeycloakConnectionError as error:
        raise AdminError(f"cannot reach {where}: {_cause(error)}") from None
    except KeycloakAuthenticationError:
        raise AdminError(
            f"{where} rejected the administrator credentials of {options.admin_user!r} in realm {options.admin_realm!r}"
        ) from None
    except KeycloakError as error:
        raise AdminError(
            f"administrator sign-in at {options.keycloak_url} failed (HTTP {error.response_code}): "
            f"check the URL (the Keycloak base URL, without /realms/...) and the admin realm {options.admin_realm!r}"
        ) from None
    except (TypeError, ValueError):
        raise AdminError(f"{options.keycloak_url} did not answer like Keycloak: check the URL") from None
    return admin


def describe(error: KeycloakError) -> str:
    """One line for a Keycloak failure no command anticipated."""
    if isinstance(error, KeycloakConnectionError):
        return f"lost the connection to Keycloak: {_cause(error)}"
    detail = _detail(error.error_message)
    if error.response_code == 403:
        return f"Keycloak refused the operation (403): the administrator lacks the realm-management role for it ({detail})"
    return f"Keycloak answered {error.response_code}: {detail}"


def _detail(message: str | bytes) -> str:
    """Keycloak's own words: the `error`/`errorMessage` of a JSON body, else the text, on one line."""
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict):
        text = str(body.get("errorMessage") or body.get("error_description") or body.get("error") or text)
    return " ".join(text.split())[:200] or "no details"


def _cause(error: BaseException) -> str:
    """The innermost reason (refused, name not known, TLS), without the library's wrapping."""
    while error.__cause__ is not None:
        error = error.__cause__
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:200]}" if text else type(error).__name__
