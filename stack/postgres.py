"""The replica topology's PostgreSQL: a throw-away loopback cluster the two MLflow servers share.

Debian's `postgresql` package provides the binaries (/usr/lib/postgresql/<version>/bin); the
runner makes its own cluster instead of using the package's system cluster, so nothing outside
this checkout's state is touched. PostgreSQL refuses to run as root, so under root the server
and initdb run as the package's `postgres` user.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

from . import install
from .layout import DEV_POSTGRES_PASSWORD, HOST, POSTGRES_DATABASE, POSTGRES_PORT, POSTGRES_USER, Layout
from .procs import CommandProbe

BINARIES = Path("/usr/lib/postgresql")
SERVICE_USER = "postgres"


def bin_dir() -> Path | None:
    """The newest installed server's bin directory, or None when the package is missing."""
    found = [path.parent for path in BINARIES.glob("*/bin/postgres")]
    return max(found, key=lambda path: int(path.parent.name)) if found else None


def ensure_installed() -> Path:
    found = bin_dir()
    if found is None:
        install.apt_install(["postgresql"])
        found = bin_dir()
    if found is None:
        raise install.InstallError(f"the postgresql package installed no server under {BINARIES}")
    return found


def url() -> str:
    """The database's libpq URL (the password is the marked development default)."""
    return f"postgresql://{POSTGRES_USER}:{DEV_POSTGRES_PASSWORD}@{HOST}:{POSTGRES_PORT}/{POSTGRES_DATABASE}"


def sqlalchemy_url() -> str:
    """The URL MLflow's SQLAlchemy store takes, naming the driver the stack installs (psycopg2)."""
    return url().replace("postgresql://", "postgresql+psycopg2://", 1)


def probe() -> CommandProbe:
    """pg_isready: accepting connections, not merely listening (it listens while recovering)."""
    binaries = bin_dir() or BINARIES / "missing" / "bin"
    return CommandProbe((str(binaries / "pg_isready"), "-q", "-h", HOST, "-p", str(POSTGRES_PORT)))


def _run_as() -> list[str]:
    """The command prefix that drops root to the `postgres` user (nothing when not root)."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", f"--reuid={SERVICE_USER}", f"--regid={SERVICE_USER}", "--init-groups", "--"]


def _reachable_by_others(path: Path) -> bool:
    """True when every ancestor of `path` lets other users through (the postgres user must be)."""
    return all(ancestor.stat().st_mode & stat.S_IXOTH for ancestor in path.parents)


def cluster_dir(layout: Layout) -> Path:
    """Where the cluster lives: in the state directory when the service user can reach it, else
    (root with a checkout under a private home, as in some CI clones) a per-port directory
    under the system temp dir, linked from the state directory."""
    state = layout.state / "postgres"
    state.mkdir(parents=True, exist_ok=True)
    if not _run_as() or _reachable_by_others(state / "cluster"):
        return state / "cluster"
    outside = Path(tempfile.gettempdir()) / f"mlflow-gate-postgres-{POSTGRES_PORT}"
    (state / "cluster").symlink_to(outside)
    return outside


def init_cluster(layout: Layout) -> tuple[list[str], Path]:
    """A fresh cluster (initdb) owned by the service user; returns the server command and data dir."""
    binaries = ensure_installed()
    cluster = cluster_dir(layout)
    shutil.rmtree(cluster, ignore_errors=True)
    cluster.mkdir(mode=0o700)
    password_file = cluster / "password"
    password_file.write_text(DEV_POSTGRES_PASSWORD + "\n")
    if _run_as():
        shutil.chown(cluster, SERVICE_USER, SERVICE_USER)
        shutil.chown(password_file, SERVICE_USER, SERVICE_USER)
    data = cluster / "data"
    initdb = [
        *_run_as(),
        str(binaries / "initdb"),
        "--pgdata",
        str(data),
        "--username",
        POSTGRES_USER,
        "--pwfile",
        str(password_file),
        "--auth",
        "scram-sha-256",
        "--encoding",
        "UTF8",
        "--no-sync",
        "--no-instructions",
    ]
    result = subprocess.run(initdb, capture_output=True, text=True, check=False)
    password_file.unlink()
    if result.returncode != 0:
        raise install.InstallError(f"initdb failed: {result.stdout}{result.stderr}")
    server = [
        *_run_as(),
        str(binaries / "postgres"),
        "-D",
        str(data),
        "-c",
        f"listen_addresses={HOST}",
        "-c",
        f"port={POSTGRES_PORT}",
        # TCP on loopback only: no socket file in a shared directory such as /var/run/postgresql.
        "-c",
        "unix_socket_directories=",
    ]
    return server, data


def create_database() -> None:
    """The MLflow database, created once the server accepts connections."""
    binaries = ensure_installed()
    command = [str(binaries / "createdb"), "-h", HOST, "-p", str(POSTGRES_PORT), "-U", POSTGRES_USER, POSTGRES_DATABASE]
    env = {**os.environ, "PGPASSWORD": DEV_POSTGRES_PASSWORD}
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise install.InstallError(f"createdb failed: {result.stderr.strip()}")
