"""The built-in route map against the installed MLflow server: complete, and routed as MLflow routes.

Nothing here is a copied route list: the routes come from MLflow's Flask url_map and FastAPI app,
and "what MLflow would run" comes from werkzeug's and starlette's own matchers.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Iterable

import pytest

from authz_service.routes import SCOPES_BY_RESOURCE, Classification, Permission, Public, Refusal, RouteMap, Rule

from .mlflow_surface import MlflowRoute, MlflowSurface, uvicorn_path
from .uri_variants import variants

ADMIN = Permission("administration", "manage")


def _report(record_property: object, counts: dict[str, int]) -> None:
    """Visible without -s: properties in the JUnit XML and one line in the warnings summary."""
    for name, value in counts.items():
        record_property(name, value)  # type: ignore[operator]
    warnings.warn(", ".join(f"{name} {value}" for name, value in counts.items()), stacklevel=2)


def _verb(method: str) -> str:
    return "GET" if method == "HEAD" else method


@pytest.fixture(scope="module")
def surface() -> MlflowSurface:
    return MlflowSurface()


@pytest.fixture(scope="module")
def route_map() -> RouteMap:
    return RouteMap.load()


@pytest.fixture(scope="module")
def mapped(surface: MlflowSurface, route_map: RouteMap) -> dict[MlflowRoute, Rule | Refusal]:
    return {route: route_map.lookup(route.method, route.example) for route in surface.routes}


@pytest.fixture(scope="module")
def dispatched(surface: MlflowSurface) -> dict[MlflowRoute, str | None]:
    return {route: surface.dispatch(route.method, route.example) for route in surface.routes}


@pytest.fixture(scope="module")
def probes(
    surface: MlflowSurface, mapped: dict[MlflowRoute, Rule | Refusal], dispatched: dict[MlflowRoute, str | None]
) -> list[tuple[Rule, str, str]]:
    """(gate rule, method, MLflow handler) for every route's example, and for HEAD on every GET
    route: FastAPI does not answer HEAD, so HEAD can reach the Flask twin of a FastAPI route."""
    found = []
    for route, rule in mapped.items():
        assert isinstance(rule, Rule), route
        for method, handler in ((route.method, dispatched[route]), ("HEAD", surface.dispatch("HEAD", route.example))):
            if handler is not None and (method == route.method or route.method == "GET"):
                found.append((rule, _verb(method), handler))
    return found


@pytest.fixture(scope="module")
def handlers_by_rule(probes: list[tuple[Rule, str, str]]) -> dict[Rule, set[str]]:
    """The MLflow handlers each gate rule stands for, learnt from the routes' own examples."""
    handlers: dict[Rule, set[str]] = defaultdict(set)
    for rule, _, handler in probes:
        handlers[rule].add(handler)
    return handlers


@pytest.fixture(scope="module")
def permission_by_handler(probes: list[tuple[Rule, str, str]]) -> dict[tuple[str, str], set[Classification]]:
    found: dict[tuple[str, str], set[Classification]] = defaultdict(set)
    for rule, method, handler in probes:
        found[(handler, method)].add(rule.classification)
    return found


def test_the_pinned_mlflow_is_installed() -> None:
    import mlflow

    assert mlflow.__version__ == "3.17.2"


def test_every_mlflow_route_is_mapped(
    surface: MlflowSurface, mapped: dict[MlflowRoute, Rule | Refusal], record_property: object
) -> None:
    refused = [
        f"{route.method} {route.template}: {rule.reason}" for route, rule in mapped.items() if isinstance(rule, Refusal)
    ]
    assert refused == []
    flask = sum(route.endpoint.startswith("flask:") for route in surface.routes)
    assert flask > 400, "MLflow 3.17.2's Flask app alone registers 412 (route, method) pairs"
    assert len(surface.routes) - flask > 70, "the FastAPI routers (OTLP, jobs, gateway, assistant, MCP, ...)"
    _report(
        record_property,
        {
            "mlflow_routes_enumerated": len(surface.routes),
            "mlflow_routes_flask": flask,
            "mlflow_routes_fastapi": len(surface.routes) - flask,
            "mlflow_routes_covered": sum(isinstance(rule, Rule) for rule in mapped.values()),
        },
    )


def test_every_example_reaches_its_own_handler(
    surface: MlflowSurface, dispatched: dict[MlflowRoute, str | None]
) -> None:
    """Checks the in-process dispatcher: a route's example runs that route's handler, or the
    handler of an identical route registered earlier (FastAPI shadows some Flask routes)."""
    same_spelling: dict[tuple[str, str], set[str]] = defaultdict(set)
    for route in surface.routes:
        same_spelling[(route.method, route.example)].add(route.endpoint)
    wrong = [
        f"{route.method} {route.example}: {dispatched[route]}"
        for route in surface.routes
        if dispatched[route] not in same_spelling[(route.method, route.example)]
    ]
    assert wrong == []


def test_the_gate_rule_of_each_route_stands_for_the_handler_mlflow_runs(
    mapped: dict[MlflowRoute, Rule | Refusal],
    dispatched: dict[MlflowRoute, str | None],
    handlers_by_rule: dict[Rule, set[str]],
) -> None:
    for route, rule in mapped.items():
        assert isinstance(rule, Rule)
        assert dispatched[route] in handlers_by_rule[rule]


def test_each_handler_needs_one_permission_whichever_path_reaches_it(
    permission_by_handler: dict[tuple[str, str], set[Classification]],
) -> None:
    """/api and /ajax-api, v2 and v3, Flask and FastAPI twins must all ask for the same thing."""
    ambiguous = {key: value for key, value in permission_by_handler.items() if len(value) != 1}
    assert ambiguous == {}


def test_no_rule_is_dead(route_map: RouteMap, handlers_by_rule: dict[Rule, set[str]]) -> None:
    """A rule that no MLflow route reaches is a typo or a route MLflow dropped."""
    dead = [f"{rule.source}: {rule.method} {rule.pattern}" for rule in route_map.rules if rule not in handlers_by_rule]
    assert dead == []


def test_the_map_uses_only_the_realm_resources_and_scopes(route_map: RouteMap) -> None:
    permissions = [rule.classification for rule in route_map.rules if isinstance(rule.classification, Permission)]
    assert {permission.resource for permission in permissions} <= set(SCOPES_BY_RESOURCE)
    assert all(permission.scope in SCOPES_BY_RESOURCE[permission.resource] for permission in permissions)
    assert set(SCOPES_BY_RESOURCE) == {
        "experiments", "runs", "artifacts", "registered-models", "model-versions", "logged-models",
        "traces", "datasets", "scorers", "gateway", "evaluation", "ui", "administration",
    }  # fmt: skip


def test_only_liveness_is_public(route_map: RouteMap) -> None:
    public = {rule.pattern for rule in route_map.rules if isinstance(rule.classification, Public)}
    assert public == {"/health", "/version"}
    assert not any(isinstance(rule.classification, Refusal) for rule in route_map.rules)


def _is_removal(route: MlflowRoute) -> bool:
    name = route.endpoint.rsplit(".", 1)[-1].rsplit(":", 1)[-1].lower()
    return route.method == "DELETE" or any(word in name for word in ("delete", "remove", "detach"))


def _removes_only_a_label(route: MlflowRoute) -> bool:
    return any(word in route.endpoint.lower() for word in ("tag", "alias"))


def test_removals_need_delete_except_tags_and_aliases(mapped: dict[MlflowRoute, Rule | Refusal]) -> None:
    wrong = []
    for route, rule in mapped.items():
        assert isinstance(rule, Rule)
        permission = rule.classification
        if not _is_removal(route) or permission == ADMIN:
            continue
        allowed = {"update", "delete"} if _removes_only_a_label(route) else {"delete"}
        if not (isinstance(permission, Permission) and permission.scope in allowed):
            wrong.append(f"{route.method} {route.template} ({route.endpoint}): {permission}")
    assert wrong == []


def test_reads_never_need_more_than_read(mapped: dict[MlflowRoute, Rule | Refusal]) -> None:
    """GET must stay side-effect free for the gate too: a GET rule is a read, public or admin."""
    for route, rule in mapped.items():
        assert isinstance(rule, Rule)
        if route.method == "GET":
            permission = rule.classification
            assert permission == ADMIN or isinstance(permission, Public) or permission.scope == "read", route


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/api/2.0/mlflow/runs/delete", Permission("runs", "delete")),
        ("POST", "/api/2.0/mlflow/experiments/delete", Permission("experiments", "delete")),
        ("POST", "/api/2.0/mlflow/traces/delete-traces", Permission("traces", "delete")),
        ("POST", "/ajax-api/3.0/mlflow/traces/delete-traces", Permission("traces", "delete")),
        ("DELETE", "/api/2.0/mlflow/model-versions/delete", Permission("model-versions", "delete")),
        ("DELETE", "/ajax-api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/m", Permission("artifacts", "delete")),
        ("POST", "/api/2.0/mlflow/runs/log-batch", Permission("runs", "update")),
        ("POST", "/api/2.0/mlflow/runs/create", Permission("runs", "create")),
        ("POST", "/v1/traces", Permission("traces", "create")),
        ("POST", "/ajax-api/3.0/mlflow/demo/delete", ADMIN),
        ("POST", "/api/2.0/mlflow/webhooks", ADMIN),
        ("DELETE", "/api/3.0/mlflow/workspaces/w", ADMIN),
        ("GET", "/api/3.0/mlflow/gateway/secrets/list", ADMIN),
        ("POST", "/ajax-api/3.0/mlflow/assistant/message", ADMIN),
        ("POST", "/graphql", Permission("runs", "read")),
        ("GET", "/ajax-api/3.0/mlflow/server-info", Permission("ui", "read")),
        # MCP subtree: MLflow takes the first of its {name:path} patterns, here delete_mcp_server_version.
        ("DELETE", "/api/3.0/mlflow/mcp-servers/x/tags/a/versions/b", Permission("gateway", "delete")),
    ],
)
def test_representative_routes(
    surface: MlflowSurface, route_map: RouteMap, method: str, path: str, expected: Classification
) -> None:
    assert route_map.classify(method, path) == expected
    assert surface.dispatch(method, path) is not None


def test_graphql_has_only_read_fields() -> None:
    """The /graphql rule is a read because these are all the root fields MLflow 3.17.2 has, and
    each resolves through a get/search/list handler. A new field must be reviewed first."""
    from mlflow.server.graphql.graphql_schema_extensions import schema

    graphql_schema = schema.graphql_schema
    assert set(graphql_schema.query_type.fields) == {
        "mlflowGetExperiment",
        "mlflowGetMetricHistoryBulkInterval",
        "mlflowGetRun",
        "mlflowListArtifacts",
        "mlflowSearchModelVersions",
        "mlflowSearchRuns",
        "test",
    }
    assert set(graphql_schema.mutation_type.fields) == {"mlflowSearchDatasets", "mlflowSearchRuns", "testMutation"}
    assert graphql_schema.subscription_type is None


def _attack_targets(surface: MlflowSurface, mapped: dict[MlflowRoute, Rule | Refusal]) -> Iterable[MlflowRoute]:
    """Routes worth reaching by another spelling: everything that removes data, and admin routes."""
    for route in surface.routes:
        rule = mapped[route]
        assert isinstance(rule, Rule)
        permission = rule.classification
        if _is_removal(route) or (isinstance(permission, Permission) and permission.scope in ("delete", "manage")):
            yield route


def test_variants_of_deleting_and_admin_routes_reach_what_the_gate_checked(
    surface: MlflowSurface,
    route_map: RouteMap,
    mapped: dict[MlflowRoute, Rule | Refusal],
    handlers_by_rule: dict[Rule, set[str]],
    permission_by_handler: dict[tuple[str, str], set[Classification]],
    record_property: object,
) -> None:
    """For every spelling the gate lets through, MLflow runs a handler of the rule the gate
    matched and that handler needs exactly the permission the gate asked for."""
    counts = {"generated": 0, "refused": 0, "accepted": 0, "accepted_but_unrouted": 0}
    wrong: list[str] = []
    targets = list(_attack_targets(surface, mapped))
    assert len(targets) > 100
    for route in targets:
        for variant in variants(route.method, route.example):
            counts["generated"] += 1
            rule = route_map.lookup(variant.method, variant.target)
            if isinstance(rule, Refusal):
                counts["refused"] += 1
                continue
            handler = surface.dispatch(variant.method, uvicorn_path(variant.target))
            if handler is None:
                # Harmless (nothing runs) and expected only where FastAPI has no HEAD for a GET.
                counts["accepted_but_unrouted"] += 1
                if variant.method != "HEAD":
                    wrong.append(f"{variant}: gate rule {rule.source} but MLflow has no route")
                continue
            counts["accepted"] += 1
            if handler not in handlers_by_rule[rule]:
                wrong.append(f"{variant}: gate rule {rule.source} but MLflow runs {handler}")
            elif permission_by_handler[(handler, _verb(variant.method))] != {rule.classification}:
                wrong.append(f"{variant}: gate asks {rule.classification}, {handler} needs more")
    assert wrong == []
    assert counts["refused"] > counts["accepted"] > len(targets)
    _report(record_property, {f"variants_{name}": value for name, value in counts.items()})
