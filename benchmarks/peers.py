"""The processes a benchmark run adds beside the stack: NGINX variants of the product template,
the do-nothing FastAPI endpoint, oauth2-proxy, a gate with two workers and MLflow's basic-auth app.

Each is started with the stack runner's process helpers (own process group, pid file, log under
.stack/bench/) and stopped by the harness when the run ends.
"""

from __future__ import annotations

import base64
import os
import secrets
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx

from stack import components, install, nginx, procs
from stack.layout import DEV_GATE_CLIENT_SECRET, GATE_CLIENT_ID, HOST, Layout

OAUTH2_PROXY_MODULE = "github.com/oauth2-proxy/oauth2-proxy/v7"
OAUTH2_PROXY_VERSION = "v7.15.6"
# Development-only credentials of the throw-away MLflow basic-auth server (a benchmark peer).
BASIC_ADMIN = ("bench-admin", "dev-only-bench-admin-password")
BASIC_USER = ("bench-reader", "dev-only-bench-reader-password")
STATIC_BODY = "ok"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def basic_header(user: tuple[str, str]) -> str:
    return "Basic " + base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()


@dataclass(frozen=True)
class PortProbe:
    """Ready when something accepts connections on the port (an auth peer may refuse /health)."""

    port: int

    def __call__(self) -> bool:
        return procs.port_in_use(HOST, self.port)

    def __str__(self) -> str:
        return f"{HOST}:{self.port} accepts connections"


@dataclass(frozen=True)
class Started:
    name: str
    port: int
    pid: int

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


class Peers:
    """Starts named processes and stops all of them at the end (`with Peers(layout) as peers`)."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.state = layout.state / "bench"
        self._names: list[str] = []

    def __enter__(self) -> Peers:
        self.state.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, *_exc: object) -> None:
        for name in reversed(self._names):
            procs.stop(self.layout, name, grace=10)

    def stop(self, started: Started) -> None:
        procs.stop(self.layout, started.name, grace=10)
        self._names.remove(started.name)

    def _start(
        self, name: str, port: int, command: list[str], probe: procs.Probe | PortProbe, env: dict[str, str] | None = None
    ) -> Started:
        log = self.state / f"{name}.log"
        running = procs.start(self.layout, name, command, log, env or {}, self.layout.repo)
        self._names.append(name)
        procs.wait_healthy(running, probe, 180)  # type: ignore[arg-type]
        return Started(name, port, running.process.pid)

    def nginx(self, name: str, gate: str | None, upstream: str | None, cache_seconds: int = 0,
              oauth2_proxy: bool = False) -> Started:
        """The product template with the gate (or a peer) at `gate`, or without auth_request when
        `gate` is None; `upstream` None means a static answer from the same NGINX."""
        state = self.state / name
        port, static_port = free_port(), free_port()
        conf = nginx.write_configs(
            self.layout.nginx_template,
            state,
            {
                "GATEWAY_LISTEN": f"{HOST}:{port}",
                "GATE_UPSTREAM": gate or f"{HOST}:{static_port}",
                "MLFLOW_UPSTREAM": upstream or f"{HOST}:{static_port}",
                "MLFLOW_HOST_HEADER": components.MLFLOW_HOST_HEADER,
                **nginx.auth_cache_values(state / "auth-cache", cache_seconds),
            },
        )
        gateway = state / "gateway.conf"
        text = gateway.read_text()
        if gate is None:
            text = _replace_once(text, "auth_request /_gate/check;", "auth_request off;")
        if oauth2_proxy:
            text = _replace_once(text, "proxy_pass http://mlflow_gate/_gate/check;", "proxy_pass http://mlflow_gate/oauth2/auth;")
        if upstream is None:
            text += f"""
server {{
    listen {HOST}:{static_port};
    access_log off;
    location / {{
        return 200 "{STATIC_BODY}";
    }}
}}
"""
        gateway.write_text(text)
        binary = install.which("nginx") or "nginx"
        command = [binary, "-p", str(state), "-e", str(state / "error.log"), "-c", str(conf)]
        return self._start(name, port, command, PortProbe(port))

    def noop_fastapi(self) -> Started:
        port = free_port()
        command = [
            str(self.layout.venv_python), "-m", "uvicorn", "benchmarks.noop_auth:app",
            "--host", HOST, "--port", str(port), "--log-level", "warning", "--no-access-log",
        ]
        return self._start("bench-noop", port, command, _status_probe(port, "/_gate/check"))

    def gate(self, name: str, workers: int, settings: dict[str, str] | None = None) -> Started:
        """A gate configured like the stack's (same Keycloak, Redis, settings unless `settings`
        overrides some) on its own port."""
        port = free_port()
        stack_gate = components.gate(self.layout)
        (self.state / name).mkdir(parents=True, exist_ok=True)
        env = {
            **stack_gate.env,
            **(settings or {}),
            "GATE_PORT": str(port),
            "GATE_WORKERS": str(workers),
            # Its own metric files and audit log: a gate empties its metrics directory when it starts.
            "PROMETHEUS_MULTIPROC_DIR": str(self.state / name / "metrics"),
            "GATE_AUDIT_LOG": str(self.state / name / "audit.log"),
        }
        return self._start(name, port, list(stack_gate.command), procs.HttpProbe(f"http://{HOST}:{port}/_gate/health"), env)

    def oauth2_proxy(self, keycloak_url: str, realm: str) -> Started:
        port = free_port()
        command = [
            str(ensure_oauth2_proxy(self.layout)),
            "--provider=keycloak-oidc",
            f"--oidc-issuer-url={keycloak_url}/realms/{realm}",
            f"--client-id={GATE_CLIENT_ID}",
            f"--client-secret={DEV_GATE_CLIENT_SECRET}",
            "--skip-jwt-bearer-tokens=true",
            "--email-domain=*",
            f"--cookie-secret={base64.urlsafe_b64encode(os.urandom(24)).decode()}",
            "--cookie-secure=false",
            "--upstream=static://202",
            f"--http-address={HOST}:{port}",
            "--request-logging=false",
        ]
        return self._start("bench-oauth2-proxy", port, command, procs.HttpProbe(f"http://{HOST}:{port}/ping"))

    def mlflow_basic_auth(self, cache_ttl_seconds: int) -> Started:
        """MLflow's own `--app-name basic-auth` on a fresh store, two workers like the stack's MLflow,
        with a reader account that inherits READ (the default permission)."""
        name = f"bench-mlflow-basic-{cache_ttl_seconds}"
        state = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.state))
        port = free_port()
        config = state / "basic_auth.ini"
        config.write_text(
            "[mlflow]\n"
            "default_permission = READ\n"
            f"database_uri = sqlite:///{state / 'basic_auth.db'}\n"
            f"admin_username = {BASIC_ADMIN[0]}\n"
            f"admin_password = {BASIC_ADMIN[1]}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            f"auth_cache_ttl_seconds = {cache_ttl_seconds}\n"
        )
        command = [
            str(self.layout.venv / "bin" / "mlflow"), "server", "--app-name", "basic-auth",
            "--host", HOST, "--port", str(port),
            "--backend-store-uri", f"sqlite:///{state / 'mlflow.db'}",
            "--allowed-hosts", f"{HOST}:{port}",
            "--workers", "2",
            "--uvicorn-opts", components.MLFLOW_UVICORN_OPTS,
        ]
        # Two workers must share one CSRF signing key; a random one per run (benchmark peer only).
        env = {"MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32)}
        started = self._start(name, port, command, _status_probe(port, "/health"), env)
        created = httpx.post(
            f"{started.url}/api/2.0/mlflow/users/create",
            json={"username": BASIC_USER[0], "password": BASIC_USER[1]},
            headers={"Authorization": basic_header(BASIC_ADMIN)},
            timeout=60,
        )
        created.raise_for_status()
        return started


def _replace_once(text: str, old: str, new: str) -> str:
    if text.count(old) != 1:
        raise RuntimeError(f"the NGINX template no longer has exactly one {old!r}; update benchmarks/peers.py")
    return text.replace(old, new)


def _status_probe(port: int, path: str) -> procs.HttpProbe:
    return procs.HttpProbe(f"http://{HOST}:{port}{path}")


def ensure_oauth2_proxy(layout: Layout) -> Path:
    """oauth2-proxy for the comparison row only (never a dependency of the gate), built once into
    the cache with `go install` from the Go module proxy."""
    binary = layout.cache / "bin" / f"oauth2-proxy-{OAUTH2_PROXY_VERSION}"
    if binary.exists():
        return binary
    go = install.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if go is None:
        raise install.InstallError("oauth2-proxy is built with Go; install Go or put the binary at " + str(binary))
    print(f"building oauth2-proxy {OAUTH2_PROXY_VERSION} with go install (a few minutes)", flush=True)
    binary.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=layout.cache) as scratch:
        env = {**os.environ, "GOBIN": scratch, "GOFLAGS": "-mod=mod"}
        command = [go, "install", f"{OAUTH2_PROXY_MODULE}@{OAUTH2_PROXY_VERSION}"]
        if subprocess.run(command, env=env, check=False).returncode != 0:
            raise install.InstallError(f"go install {OAUTH2_PROXY_MODULE}@{OAUTH2_PROXY_VERSION} failed")
        (Path(scratch) / "oauth2-proxy").rename(binary)
    return binary
