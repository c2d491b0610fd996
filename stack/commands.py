"""`up`, `down`, `status` and `test`: the runner's verbs."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import components, install, procs, state
from .components import HEALTH, Component
from .layout import ALL_PORTS, HOST, Layout

Started = tuple[Component, procs.Running]


def up(layout: Layout) -> int:
    """Start a fresh stack (stopping this checkout's previous one) and write stack.json."""
    install.ensure_apt_packages(install.STACK_PACKAGES)
    java_home = install.find_java_home()
    install.ensure_venv(layout)
    down(layout, quiet=True)
    busy = [port for port in ALL_PORTS if procs.port_in_use(HOST, port)]
    if busy:
        print(
            f"ports {busy} on {HOST} are in use by processes this stack did not start "
            "(another checkout's stack, or a manual run?); stop them first",
            flush=True,
        )
        return 1
    _clean_state(layout)

    admin_password = secrets.token_urlsafe(18)
    started: list[Started] = []
    began = time.monotonic()
    try:
        # Keycloak dominates start-up, so Redis and MLflow boot while it does; the gate
        # waits for Keycloak (its issuer) and NGINX for everything behind it.
        _launch(layout, started, components.keycloak(layout, java_home, admin_password))
        _launch(layout, started, components.redis(layout))
        _launch(layout, started, components.mlflow(layout))
        for launched in started:
            _wait(launched, began)
        _wait(_launch(layout, started, components.gate(layout)), began)
        _wait(_launch(layout, started, components.gateway(layout)), began)
    except (procs.StartError, install.InstallError, KeyboardInterrupt) as error:
        print(f"\nstack start failed: {error or 'interrupted'}", flush=True)
        for component, _ in reversed(started):
            procs.stop(layout, component.name)
        print(f"stopped what had started; logs stay in {layout.state}")
        return 1

    stack = state.document(layout, admin_password)
    state.write(layout, stack)
    _print_summary(layout, stack, time.monotonic() - began)
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


def _launch(layout: Layout, started: list[Started], component: Component) -> Started:
    print(f"starting {component.name} (log: {component.log})", flush=True)
    running = procs.start(layout, component.name, component.command, component.log, component.env, component.cwd)
    started.append((component, running))
    return component, running


def _wait(launched: Started, began: float) -> None:
    component, running = launched
    procs.wait_healthy(running, component.probe, component.timeout)
    print(f"  {component.name} healthy at {time.monotonic() - began:.1f} s ({component.probe})", flush=True)


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
  dev users           {users}
  state and logs      {layout.state}
  details             {layout.stack_json}
stop with: python3 -m stack down"""
    )


def down(layout: Layout, quiet: bool = False) -> int:
    """Stop every component this checkout's stack started; safe to repeat."""
    stopped = [name for name in reversed(list(HEALTH)) if procs.stop(layout, name)]
    layout.stack_json.unlink(missing_ok=True)
    if not quiet:
        print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
    return 0


def status(layout: Layout) -> int:
    """Exit 0 only if every component is running (started by this stack) and healthy."""
    healthy = True
    for name, probe in HEALTH.items():
        pid = procs.alive(layout, name)
        ok = pid is not None and probe()
        healthy &= ok
        where = f"pid {pid}" if pid else "not running"
        print(f"{name:9} {'healthy' if ok else 'DOWN':8} {where:12} {probe}")
    print(f"stack.json: {layout.stack_json if layout.stack_json.exists() else 'absent'}")
    return 0 if healthy and layout.stack_json.exists() else 1


def test(layout: Layout, pytest_args: Sequence[str]) -> int:
    """Run pytest in the stack venv; integration fixtures start the stack when needed."""
    install.ensure_apt_packages({**install.STACK_PACKAGES, **install.BROWSER_PACKAGES})
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
