"""Render the shared NGINX template the way the official image's envsubst step does.

Only the template's own ${NAME} placeholders are replaced; NGINX variables such as
$request_uri are left alone. An unknown or missing placeholder is an error instead of an
empty string, so a typo cannot silently produce `server ;`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
TEMPLATE_VARIABLES = frozenset(
    {
        "GATEWAY_LISTEN",
        "GATEWAY_TLS",
        "GATE_UPSTREAM",
        "GATE_EXTRA_SERVERS",
        "MLFLOW_UPSTREAM",
        "MLFLOW_EXTRA_SERVERS",
        "MLFLOW_HOST_HEADER",
        "GATEWAY_AUTH_CACHE_ZONE",
        "GATEWAY_AUTH_CACHE",
    }
)
# Placeholders a caller may leave out: without TLS directives the gateway speaks plain HTTP,
# without extra servers each upstream has the one address it was given, and without the
# micro-cache every request is checked by the gate.
DEFAULTS = {
    "GATEWAY_TLS": "",
    "GATE_EXTRA_SERVERS": "",
    "MLFLOW_EXTRA_SERVERS": "",
    "GATEWAY_AUTH_CACHE_ZONE": "",
    "GATEWAY_AUTH_CACHE": "",
}


def auth_cache_values(cache_dir: Path, seconds: int) -> dict[str, str]:
    """The two micro-cache placeholders for an answer lifetime of `seconds` (0: off)."""
    if seconds <= 0:
        return {"GATEWAY_AUTH_CACHE_ZONE": "", "GATEWAY_AUTH_CACHE": ""}
    return {
        "GATEWAY_AUTH_CACHE_ZONE": f"proxy_cache_path {cache_dir} keys_zone=gate_auth:10m levels=1:2 "
        "max_size=64m inactive=1m use_temp_path=off;",
        "GATEWAY_AUTH_CACHE": f"proxy_cache gate_auth; proxy_cache_valid 200 403 {seconds}s;",
    }


class TemplateError(ValueError):
    """The template uses a placeholder the caller did not provide (or does not know)."""


def render_template(template: str, values: Mapping[str, str]) -> str:
    values = {**DEFAULTS, **values}
    used = set(PLACEHOLDER.findall(template))
    unknown = used - TEMPLATE_VARIABLES
    missing = used - set(values)
    if unknown or missing:
        raise TemplateError(f"unknown placeholders {sorted(unknown)}, missing values {sorted(missing)}")
    return PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


def server_lines(addresses: Iterable[str]) -> str:
    """`server a; server b;` for an upstream's extra-servers placeholder (empty for none)."""
    return " ".join(f"server {address};" for address in addresses)


def main_config(state: Path, gateway_conf: Path) -> str:
    """A top-level nginx.conf that keeps pid, temp files and logs inside `state`.

    `daemon off` keeps the master in the process group the runner started, so `down`
    stops it like every other component.
    """
    temp = state / "tmp"
    return f"""daemon off;
worker_processes 1;
pid {state / "nginx.master.pid"};
error_log {state / "error.log"} info;

events {{
    worker_connections 1024;
}}

http {{
    default_type application/octet-stream;
    access_log {state / "access.log"};
    client_body_temp_path {temp / "client_body"};
    proxy_temp_path {temp / "proxy"};
    fastcgi_temp_path {temp / "fastcgi"};
    uwsgi_temp_path {temp / "uwsgi"};
    scgi_temp_path {temp / "scgi"};

    include {gateway_conf};
}}
"""


def write_configs(template_path: Path, state: Path, values: Mapping[str, str]) -> Path:
    """Render the template and the top-level config into `state`; returns nginx.conf."""
    (state / "tmp").mkdir(parents=True, exist_ok=True)
    gateway_conf = state / "gateway.conf"
    gateway_conf.write_text(render_template(template_path.read_text(), values))
    nginx_conf = state / "nginx.conf"
    nginx_conf.write_text(main_config(state, gateway_conf))
    return nginx_conf
