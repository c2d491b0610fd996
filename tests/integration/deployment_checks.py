"""Checks shared by the deployment-file tests: image pinning, throwaway certificates, and the real
`nginx -t` on a rendered gateway config.

A config written for Kubernetes or compose names its upstreams by service name (`gate:8090`),
which NGINX resolves while loading. `nginx_config_test` therefore runs NGINX in a private mount
namespace whose /etc/hosts maps those names to loopback: the exact rendered text is checked,
without its services.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from stack import nginx as stack_nginx

UPSTREAM_SERVER = re.compile(r"^\s*server\s+\[?([^\s;\]]+?)\]?(?::\d+)?\s*;", re.MULTILINE)


def is_pinned(image: str) -> bool:
    """A digest, or a tag that names a version (has a digit and is not `latest`)."""
    if "@sha256:" in image:
        return True
    _, _, tag = image.rpartition("/")[2].partition(":")
    return bool(tag) and tag != "latest" and re.search(r"\d", tag) is not None


def self_signed_certificate(directory: Path, name: str = "tls") -> tuple[Path, Path]:
    """A one-day certificate and key for `localhost`, made with the real openssl."""
    directory.mkdir(parents=True, exist_ok=True)
    certificate, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"]
        + ["-keyout", str(key), "-out", str(certificate)],
        check=True,
        capture_output=True,
    )
    return certificate, key


def upstream_hosts(gateway_conf: str) -> set[str]:
    """Host names (not addresses) of the `server` lines of the config's upstream blocks."""
    hosts = set()
    for host in UPSTREAM_SERVER.findall(gateway_conf):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            hosts.add(host)
    return hosts


def nginx_config_test(gateway_conf: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    """Run `nginx -t` on `gateway_conf` (http-context text, as the template renders)."""
    binary = shutil.which("nginx", path="/usr/sbin:/usr/bin:/sbin:/bin")
    if binary is None:
        pytest.skip("nginx is not installed (python3 -m stack test installs it)")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "tmp").mkdir(exist_ok=True)
    gateway = workdir / "gateway.conf"
    gateway.write_text(gateway_conf)
    main = workdir / "nginx.conf"
    main.write_text(stack_nginx.main_config(workdir, gateway))
    command = [binary, "-t", "-p", str(workdir), "-e", str(workdir / "error.log"), "-c", str(main)]
    hosts = upstream_hosts(gateway_conf)
    if hosts:
        if os.geteuid() != 0 or shutil.which("unshare") is None:
            pytest.skip("resolving upstream names needs root and unshare (a private /etc/hosts)")
        hosts_file = workdir / "hosts"
        hosts_file.write_text("127.0.0.1 localhost\n" + "".join(f"127.0.0.1 {host}\n" for host in sorted(hosts)))
        private_hosts = 'mount --bind "$0" /etc/hosts && exec "$@"'
        command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", private_hosts, str(hosts_file), *command]
    return subprocess.run(command, capture_output=True, text=True, check=False)
