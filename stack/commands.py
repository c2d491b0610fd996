"""`up`, `down`, `status` and `test`: the runner's verbs."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import components, install, postgres, procs, replicas, state, workspaces
from .components import HEALTH
from .layout import ALL_PORTS, HOST, REPLICA_PORTS, WORKSPACES, Layout
from .procs import Probe
from .starting import Starter


def up(layout: Layout, with_replicas: bool = False) -> int:
    """Start a fresh stack (stopping this checkout's previous one) and write stack.json."""
    install.ensure_apt_packages(install.STACK_PACKAGES)
    if with_replicas:
        postgres.ensure_installed()
    java_home = install.find_java_home()
    install.ensure_venv(layout)
    down(layout, quiet=True)
    ports = ALL_PORTS + REPLICA_PORTS if with_replicas else ALL_PORTS
    busy = [port for port in ports if procs.port_in_use(HOST, port)]
    if busy:
        print(
            f"ports {busy} on {HOST} are in use by processes this stack did not start "
            "(another checkout's stack, or a manual run?); stop them first",
            flush=True,
        )
        return 1
    _clean_state(layout)

    admin_password = secrets.token_urlsafe(18)
    starter = Starter(layout)
    try:
        keycloak = components.keycloak(layout, java_home, admin_password)
        if with_replicas:
            replicas.start(layout, starter, keycloak)
        else:
            # Keycloak dominates start-up, so Redis and MLflow boot while it does; the gate
            # waits for Keycloak (its issuer) and NGINX for everything behind it.
            starter.launch(keycloak)
            starter.launch(components.redis(layout))
            starter.launch(components.mlflow(layout))
            starter.wait_all()
            starter.start(components.gate(layout))
            starter.start(components.gateway(layout))
    except (procs.StartError, install.InstallError, KeyboardInterrupt) as error:
        print(f"\nstack start failed: {error or 'interrupted'}", flush=True)
        starter.stop_all()
        print(f"stopped what had started; logs stay in {layout.state}")
        return 1

    stack = state.document(layout, admin_password)
    stack |= replicas.document(layout) if with_replicas else state.single_topology()
    state.write(layout, stack)
    if WORKSPACES:
        print("creating the demo workspaces with mlflow-gate-admin", flush=True)
        try:
            workspaces.create(layout, admin_password)
        except RuntimeError as error:
            # Left running so the failure can be looked at; a later `up` starts afresh.
            print(f"\nthe stack is up but its demo workspaces are not: {error}", flush=True)
            return 1
    _print_summary(layout, stack, starter.elapsed())
    return 0


def _clean_state(layout: Layout) -> None:
    """Every `up` starts from empty data; only the prepared Keycloak home is kept."""
    layout.state.mkdir(exist_ok=True)
    for entry in layout.state.iterdir():
        if entry.name == "keycloak":
            for item in entry.iterdir():
                if item.name != "home":
                    _remove(item)
        else:
            _remove(entry)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _print_summary(layout: Layout, stack: dict[str, Any], seconds: float) -> None:
    users = ", ".join(
        f"{name}/{user['password']} {user['roles'] or '(no role)'}" for name, user in stack["users"].items()
    )
    print(
        f"""
stack up in {seconds:.0f} s
  gateway (use this)  {stack["gateway_url"]}
  keycloak            {stack["keycloak_url"]}/admin  admin/{stack["keycloak_admin"]["password"]}
  keycloak health     {stack["keycloak_management_url"]}/health/ready
  gate                {stack["gate_url"]}  (NGINX auth backend)
  mlflow (direct)     {stack["mlflow_url"]}
  redis               {stack["redis_url"]}
  topology            {_topology(stack)}
  dev users           {users}
  state and logs      {layout.state}
  details             {layout.stack_json}
stop with: python3 -m stack down"""
    )


def _topology(stack: dict[str, Any]) -> str:
    if stack["topology"] != "replicas":
        return "single (one process per component)"
    return (
        f"replicas: NGINX {' '.join(stack['gateway_urls'])}; gates {' '.join(stack['gate_urls'])}; "
        f"MLflow {' '.join(stack['mlflow_urls'])} on {stack['postgres_url']}"
    )


def _instances(layout: Layout) -> dict[str, Probe]:
    """The probes of the topology that runs: replicas when stack.json or a pid file says so."""
    try:
        topology = json.loads(layout.stack_json.read_text()).get("topology")
    except (OSError, ValueError):
        topology = None
    if topology == "replicas" or procs.alive(layout, "postgres") is not None:
        return replicas.health()
    return HEALTH


def down(layout: Layout, quiet: bool = False) -> int:
    """Stop every component this checkout's stack started, in either topology; safe to repeat."""
    stopped = [name for name in reversed(list(replicas.health())) if procs.stop(layout, name)]
    layout.stack_json.unlink(missing_ok=True)
    if not quiet:
        print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
    return 0


def status(layout: Layout) -> int:
    """Exit 0 only if every component is running (started by this stack) and healthy."""
    healthy = True
    for name, probe in _instances(layout).items():
        pid = procs.alive(layout, name)
        ok = pid is not None and probe()
        healthy &= ok
        where = f"pid {pid}" if pid else "not running"
        print(f"{name:9} {'healthy' if ok else 'DOWN':8} {where:12} {probe}")
    print(f"stack.json: {layout.stack_json if layout.stack_json.exists() else 'absent'}")
    return 0 if healthy and layout.stack_json.exists() else 1


def test(layout: Layout, pytest_args: Sequence[str]) -> int:
    """Run pytest in the stack venv; integration fixtures start the stack when needed."""
    install.ensure_apt_packages({**install.STACK_PACKAGES, **install.BROWSER_PACKAGES, **install.TEST_TOOL_PACKAGES})
    install.ensure_venv(layout)
    selected = [arg for arg in pytest_args if not arg.startswith("-")]
    if not selected or not all(arg.startswith("tests/unit") for arg in selected):
        # helm takes minutes to build on 2 cores; build it while the earlier tests run, and the
        # chart tests wait on the same lock instead of starting a second build.
        threading.Thread(target=_build_helm_quietly, args=(layout,), daemon=True).start()
    return subprocess.run(
        [str(layout.venv_python), "-m", "pytest", *pytest_args], cwd=layout.repo, check=False
    ).returncode


def _build_helm_quietly(layout: Layout) -> None:
    """A failure here is not reported: the chart tests call ensure_helm again and show the error."""
    try:
        install.ensure_helm(layout)
    except install.InstallError:
        pass
