"""`python -m authz_service`: validate the configuration, then serve the gate with uvicorn.

With GATE_WORKERS > 1, uvicorn runs that many worker processes on the same port, each building the
app from the environment; their metrics are shared through prometheus-client's multiprocess mode,
whose directory (PROMETHEUS_MULTIPROC_DIR, a fresh temporary one when unset) is emptied here first,
so counters of a previous run never leak into this one. One worker ignores PROMETHEUS_MULTIPROC_DIR.
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import uvicorn

from .settings import Settings, SettingsError, configure_logging


def main() -> int:
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        print(error, file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    if settings.workers > 1:
        prepare_multiprocess_dir(settings.metrics_dir)
    else:
        # One process keeps its metrics in memory: multiprocess mode's file-backed values took a
        # tenth of a warm check's CPU.
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        settings = replace(settings, metrics_dir=None)
    # Imported only now: prometheus-client picks single- or multiprocess mode when first imported.
    from .app import create_app, create_app_from_env
    from .routes import RouteMap, RouteMapError

    try:
        # Workers build their own app; this process only checks the route map before forking them.
        app = create_app(settings) if settings.workers == 1 else RouteMap.load(settings.route_map_extra)
    except RouteMapError as error:
        print(f"invalid route map: {error}", file=sys.stderr)
        return 2
    options = {"host": settings.host, "port": settings.port, "log_level": settings.log_level.lower(), "access_log": False}
    if settings.workers == 1:
        uvicorn.run(app, **options)  # type: ignore[arg-type]
    else:
        factory = f"{create_app_from_env.__module__}:{create_app_from_env.__name__}"
        uvicorn.run(factory, factory=True, workers=settings.workers, **options)  # type: ignore[arg-type]
    return 0


def prepare_multiprocess_dir(configured: Path | None) -> Path:
    """An empty directory for the workers' metric files, exported as PROMETHEUS_MULTIPROC_DIR."""
    directory = configured or Path(tempfile.mkdtemp(prefix="mlflow-gate-metrics-"))
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    return directory


if __name__ == "__main__":
    sys.exit(main())
