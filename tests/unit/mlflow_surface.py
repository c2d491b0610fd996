"""The HTTP surface of the installed MLflow server, read from its own routing tables.

The route map is checked against this, not against a copied list: every (path, method) the Flask
app and the FastAPI app register, and the handler MLflow itself would run for a given request.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from functools import cached_property
from urllib.parse import unquote

from starlette.routing import Match, Mount
from werkzeug.exceptions import HTTPException

IGNORED_METHODS = frozenset({"HEAD", "OPTIONS"})
"""Added to every rule by werkzeug/starlette; the gate treats HEAD as GET and refuses OPTIONS."""


class SurfaceError(AssertionError):
    """Part of MLflow's routing cannot be enumerated; the coverage test must not skip it silently."""


@dataclass(frozen=True)
class MlflowRoute:
    method: str
    template: str
    endpoint: str
    """`flask:<endpoint>` or `fastapi:<module>.<function>`, the identity of the handler."""

    @property
    def example(self) -> str:
        """A concrete path with safe sample values that cannot collide with literal segments."""
        path = re.sub(r"<path:(\w+)>|\{(\w+):path\}", r"p-\1\2/file-\1\2.txt", self.template)
        return re.sub(r"<(\w+)>|\{(\w+)\}", r"s-\1\2", path)


def _fastapi_endpoint(route: object) -> str:
    endpoint = route.endpoint  # type: ignore[attr-defined]
    return f"fastapi:{endpoint.__module__}.{endpoint.__name__}"


class MlflowSurface:
    """The installed MLflow server's apps, imported once (the import takes a few seconds)."""

    def __init__(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from fastapi.routing import iter_route_contexts

            from mlflow.server import app as flask_app
            from mlflow.server.fastapi_app import app as fastapi_app
        self.flask_app = flask_app
        self.fastapi_app = fastapi_app
        contexts = list(iter_route_contexts(fastapi_app.routes))
        *self._fastapi_routes, flask_mount = contexts
        mounted = getattr(flask_mount.original_route, "app", None)
        if not (isinstance(flask_mount.original_route, Mount) and getattr(mounted, "app", None) is flask_app):
            raise SurfaceError(f"expected the Flask app mounted last at /, found {flask_mount.original_route!r}")
        for context in self._fastapi_routes:
            if not context.path or not context.methods or context.endpoint is None:
                raise SurfaceError(f"cannot enumerate FastAPI route {context.original_route!r}")
        self._adapter = flask_app.url_map.bind("mlflow.invalid")

    @cached_property
    def routes(self) -> tuple[MlflowRoute, ...]:
        """Every (template, method) pair of both apps, FastAPI first as MLflow tries it first."""
        found: list[MlflowRoute] = []
        for context in self._fastapi_routes:
            for method in sorted(set(context.methods) - IGNORED_METHODS):
                found.append(MlflowRoute(method, context.path, _fastapi_endpoint(context)))
        for rule in self.flask_app.url_map.iter_rules():
            for method in sorted(set(rule.methods or ()) - IGNORED_METHODS):
                found.append(MlflowRoute(method, rule.rule, f"flask:{rule.endpoint}"))
        return tuple(found)

    def dispatch(self, method: str, path: str) -> str | None:
        """The handler MLflow runs for an already decoded path, or None (404, 405, redirect).

        FastAPI tries its routes in registration order and takes the first full match; the Flask
        app is mounted last at / and always matches, so werkzeug decides everything else.
        """
        scope = {"type": "http", "method": method, "path": path, "root_path": "", "path_params": {}}
        for context in self._fastapi_routes:
            match, _ = context.matches(dict(scope))
            if match is Match.FULL:
                return _fastapi_endpoint(context)
        try:
            endpoint, _ = self._adapter.match(path, method)
        except HTTPException:  # NotFound, MethodNotAllowed, RequestRedirect: no handler runs
            return None
        return f"flask:{endpoint}"


def uvicorn_path(raw_target: str) -> str:
    """What uvicorn puts in scope["path"] for a raw request target: split at ?, then unquote."""
    return unquote(raw_target.partition("?")[0])
