"""Install what the stack needs, only when it is missing, so a warm `up` does no network work."""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from .layout import HELM_MODULE, HELM_VERSION, JVM_ROOT, KEYCLOAK_ARTIFACT, MIN_JAVA_MAJOR, Layout

# Binary -> Debian package providing it.
STACK_PACKAGES = {"nginx": "nginx-light", "redis-server": "redis-server"}
BROWSER_PACKAGES = {"chromium": "chromium"}
# Called by tests: curl (the README's `curl -u` example), openssl (test TLS certificates).
TEST_TOOL_PACKAGES = {"curl": "curl", "openssl": "openssl"}
MAVEN_PACKAGES = {"mvn": "maven"}

# Debian keeps nginx and redis-server in /usr/sbin, which a non-root PATH may lack.
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


class InstallError(RuntimeError):
    """Something the stack needs could not be installed; the message says what to do."""


def which(binary: str) -> str | None:
    return shutil.which(binary, path=SEARCH_PATH)


def ensure_apt_packages(binaries: dict[str, str]) -> None:
    """apt-get install the packages whose binaries are absent (one update + install run)."""
    missing = sorted({package for binary, package in binaries.items() if which(binary) is None})
    if missing:
        apt_install(missing)


def apt_install(packages: list[str]) -> None:
    """One `apt-get update` + `apt-get install -y` run (through sudo when not root)."""
    prefix: list[str] = []
    if os.geteuid() != 0:
        if shutil.which("sudo") is None:
            raise InstallError(
                f"missing packages {packages}; install them as root: apt-get install -y {' '.join(packages)}"
            )
        prefix = ["sudo"]
    print(f"installing apt packages: {' '.join(packages)}", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", *packages]):
        if subprocess.run([*prefix, *command], env=env, check=False).returncode != 0:
            raise InstallError(f"`{' '.join(command)}` failed")


def java_major(jdk: Path) -> int | None:
    """The feature version from the JDK's `release` file (cheaper than starting a JVM)."""
    try:
        text = (jdk / "release").read_text()
    except OSError:
        return None
    match = re.search(r'^JAVA_VERSION="(\d+)', text, re.MULTILINE)
    return int(match.group(1)) if match else None


def find_java_home() -> Path:
    """The newest JDK under /usr/lib/jvm that Keycloak supports (Java 17 is too old for 26.5)."""
    candidates = []
    for jdk in sorted(JVM_ROOT.glob("*")):
        major = java_major(jdk)
        if major is not None and major >= MIN_JAVA_MAJOR and (jdk / "bin" / "java").exists():
            candidates.append((major, jdk))
    if not candidates:
        raise InstallError(f"no JDK >= {MIN_JAVA_MAJOR} under {JVM_ROOT}; install one (e.g. Temurin 21 or 25)")
    return max(candidates)[1]


def ensure_keycloak(layout: Layout) -> Path:
    """Download (Maven Central) and unzip the Keycloak distribution into the cache once."""
    if (layout.keycloak_dist / "bin" / "kc.sh").exists():
        return layout.keycloak_dist
    layout.cache.mkdir(parents=True, exist_ok=True)
    if not layout.keycloak_zip.exists():
        ensure_apt_packages(MAVEN_PACKAGES)
        print(f"downloading {KEYCLOAK_ARTIFACT} with Maven", flush=True)
        command = [
            "mvn",
            "-B",
            "-q",
            "dependency:copy",
            f"-Dartifact={KEYCLOAK_ARTIFACT}",
            f"-DoutputDirectory={layout.cache}",
        ]
        if subprocess.run(command, check=False).returncode != 0 or not layout.keycloak_zip.exists():
            raise InstallError(f"Maven could not fetch {KEYCLOAK_ARTIFACT}")
    print(f"unzipping {layout.keycloak_zip.name}", flush=True)
    # Unzip beside the target and rename, so an interrupted run never leaves a half tree
    # that the kc.sh check above would mistake for a complete one.
    with tempfile.TemporaryDirectory(dir=layout.cache) as scratch:
        with zipfile.ZipFile(layout.keycloak_zip) as archive:
            for member in archive.infolist():
                extracted = Path(archive.extract(member, scratch))
                mode = member.external_attr >> 16
                if mode & 0o777:
                    extracted.chmod(mode & 0o777)
        (Path(scratch) / layout.keycloak_dist.name).rename(layout.keycloak_dist)
    return layout.keycloak_dist


def ensure_venv(layout: Layout) -> None:
    """Create the venv and install the gate (`-e <repo>[stack,test]`) and the client distribution
    (`-e <repo>/clients/python`) when either pyproject.toml changed.

    The stamp hashes the repository path too: the venv is shared by checkouts, and an
    editable install points at exactly one of them.
    """
    pyprojects = [layout.repo / "pyproject.toml", layout.client_repo / "pyproject.toml"]
    missing = [str(path) for path in pyprojects if not path.exists()]
    if missing:
        raise InstallError(f"{', '.join(missing)} missing")
    stamp = layout.venv / ".mlflow-gate-install.sha256"
    digest = hashlib.sha256(str(layout.repo).encode())
    for path in pyprojects:
        digest.update(b"\0" + path.read_bytes())
    if layout.venv_python.exists() and stamp.exists() and stamp.read_text().strip() == digest.hexdigest():
        return
    if not layout.venv_python.exists():
        print(f"creating venv {layout.venv}", flush=True)
        if subprocess.run([sys.executable, "-m", "venv", str(layout.venv)], check=False).returncode != 0:
            raise InstallError(f"could not create {layout.venv}")
    print(f"installing {layout.repo}[stack,test] and {layout.client_repo} into {layout.venv}", flush=True)
    pip = [str(layout.venv_python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    command = [*pip, "-e", f"{layout.repo}[stack,test]", "-e", str(layout.client_repo)]
    if subprocess.run(command, check=False).returncode != 0:
        raise InstallError("pip install failed (see its output above)")
    stamp.write_text(digest.hexdigest() + "\n")


def ensure_helm(layout: Layout) -> Path:
    """Build the pinned helm into the cache once with `go install` (several minutes on 2 cores).

    A file lock makes a second caller (the chart tests while `stack test` builds it in the
    background) wait for the first build instead of starting its own.
    """
    if layout.helm.exists():
        return layout.helm
    layout.cache.mkdir(parents=True, exist_ok=True)
    with open(layout.cache / "helm.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if layout.helm.exists():
            return layout.helm
        return _build_helm(layout)


def _build_helm(layout: Layout) -> Path:
    go = which("go") or shutil.which("go", path="/usr/local/go/bin")
    if go is None:
        raise InstallError(f"helm needs Go to build; install Go, or put helm {HELM_VERSION} at {layout.helm}")
    print(f"building helm {HELM_VERSION} with go install", flush=True)
    with tempfile.TemporaryDirectory(dir=layout.cache) as scratch:
        env = {**os.environ, "GOBIN": scratch, "GOFLAGS": "-mod=mod"}
        if subprocess.run([go, "install", f"{HELM_MODULE}@{HELM_VERSION}"], env=env, check=False).returncode != 0:
            raise InstallError(f"go install {HELM_MODULE}@{HELM_VERSION} failed (see its output above)")
        layout.helm.parent.mkdir(parents=True, exist_ok=True)
        (Path(scratch) / "helm").rename(layout.helm)
    return layout.helm
