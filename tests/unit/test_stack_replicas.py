"""The stack runner's replica topology: instance naming and the rendered NGINX upstreams."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from stack import components, nginx, replicas
from stack.layout import GATE_PORT, GATE_REPLICAS, Layout

TEMPLATE = Path(__file__).resolve().parents[2] / "nginx" / "gateway.conf.template"


def upstream(rendered: str, name: str) -> list[str]:
    block = re.search(rf"upstream {name} \{{(.*?)\}}", rendered, re.DOTALL)
    assert block
    return re.findall(r"server (\S+);", block.group(1))


def render(gates: int, mlflows: int) -> str:
    return nginx.render_template(
        TEMPLATE.read_text(),
        {
            "GATEWAY_LISTEN": "127.0.0.1:18080",
            "GATE_UPSTREAM": "127.0.0.1:18090",
            "GATE_EXTRA_SERVERS": nginx.server_lines(f"127.0.0.1:{18090 + n}" for n in range(1, gates)),
            "MLFLOW_UPSTREAM": "127.0.0.1:15500",
            "MLFLOW_EXTRA_SERVERS": nginx.server_lines(f"127.0.0.1:{15500 + n}" for n in range(1, mlflows)),
            "MLFLOW_HOST_HEADER": "127.0.0.1:15500",
        },
    )


def test_upstreams_list_every_replica_and_one_server_without_extras() -> None:
    assert upstream(render(3, 2), "mlflow_gate") == ["127.0.0.1:18090", "127.0.0.1:18091", "127.0.0.1:18092"]
    assert upstream(render(3, 2), "mlflow") == ["127.0.0.1:15500", "127.0.0.1:15501"]
    assert upstream(render(1, 1), "mlflow_gate") == ["127.0.0.1:18090"]
    assert nginx.server_lines([]) == ""


def test_replica_config_passes_nginx_config_test(tmp_path: Path) -> None:
    binary = shutil.which("nginx", path="/usr/sbin:/usr/bin:/sbin")
    if binary is None:
        pytest.skip("nginx is not installed (python3 -m stack up installs it)")
    gateway = tmp_path / "gateway.conf"
    gateway.write_text(render(3, 2))
    (tmp_path / "tmp").mkdir()
    main = tmp_path / "nginx.conf"
    main.write_text(nginx.main_config(tmp_path, gateway))
    command = [binary, "-t", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(main)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_every_replica_has_its_own_name_port_and_state(tmp_path: Path) -> None:
    layout = Layout(repo=tmp_path, cache=tmp_path / "cache")
    gates = [replicas.instance(layout, components.instance_name("gate", n)) for n in range(1, GATE_REPLICAS + 1)]
    assert [gate.name for gate in gates] == ["gate", "gate-2", "gate-3"]
    assert [gate.env["GATE_PORT"] for gate in gates] == [str(GATE_PORT + n) for n in range(GATE_REPLICAS)]
    assert len({gate.log for gate in gates}) == GATE_REPLICAS
    assert list(replicas.health())[-2:] == ["nginx", "nginx-2"]
    with pytest.raises(ValueError):
        replicas.instance(layout, "gate-4")
