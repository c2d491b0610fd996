"""`python -m authz_service`: validate the configuration, then serve the gate with uvicorn."""

from __future__ import annotations

import logging
import sys

import uvicorn

from .app import create_app
from .routes import RouteMapError
from .settings import Settings, SettingsError


def main() -> int:
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        print(error, file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app = create_app(settings)
    except RouteMapError as error:
        print(f"invalid route map: {error}", file=sys.stderr)
        return 2
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level.lower(), access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
