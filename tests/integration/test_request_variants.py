"""No spelling of a delete lets a Default (bob) or no-role (carol) user delete anything.

Through the real NGINX, gate, Keycloak and MLflow: alice (Admin) creates real objects with the
MLflow client, then every variant from `tests.unit.uri_variants` of every delete the MLflow client
sends (request target spelled differently, other methods, method case) goes out on a raw socket
as bob and as carol, each naming the real object in its JSON body. No answer may be 2xx or 3xx,
and afterwards alice finds every object exactly as it was. A positive control sends the unmodified
requests as alice and sees every object go, so the raw requests and bodies are ones that delete.
"""

from __future__ import annotations

import json
import re
import secrets
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import mlflow
import pytest
from mlflow.entities import Feedback
from mlflow.exceptions import MlflowException
from mlflow.tracing.client import TracingClient
from mlflow.tracking import MlflowClient
from mlflow.tracking._tracking_service.utils import _use_tracking_uri

from ..unit.mlflow_surface import MlflowSurface, uvicorn_path
from ..unit.uri_variants import Variant, variants
from .raw_http import RawResponse, address, json_request_headers, send, send_json
from .realm_client import RealmClient
from .test_mlflow_client import client_for, signed_in

pytestmark = pytest.mark.integration

THREADS = 8
REFUSED_USERS = ("bob", "carol")
ARTIFACT = "notes.txt"
T = TypeVar("T")


@dataclass(frozen=True)
class Made:
    """Real objects alice created; `label` makes the text and tags of one set recognisable."""

    label: str
    experiment_id: str
    run_id: str
    model: str
    version: str
    logged_model_id: str
    trace_v2: str
    """Deleted through /2.0 traces/delete-traces in the positive control."""
    trace_v3: str
    """Carries the assessment; deleted through /3.0 traces/delete-traces."""
    assessment_id: str
    dataset_id: str
    linked_dataset_id: str
    """Linked to the experiment; the link is what remove-experiments deletes."""
    artifact_folder: str
    """The run's artifact folder as the mlflow-artifacts routes name it (workspaces prefix it)."""

    @property
    def artifact_path(self) -> str:
        return f"{self.artifact_folder}/{ARTIFACT}"


def served_artifact_folder(artifact_uri: str) -> str:
    """`mlflow-artifacts:/<folder>` → `<folder>`: the path under /api/2.0/mlflow-artifacts/artifacts/."""
    scheme = "mlflow-artifacts:"
    assert artifact_uri.startswith(scheme), f"the stack serves artifacts itself, got {artifact_uri}"
    return artifact_uri[len(scheme):].lstrip("/")


@dataclass(frozen=True)
class DeleteRoute:
    method: str
    path: str
    body: dict[str, Any]


@pytest.fixture(scope="module")
def realm(stack: dict[str, Any]) -> RealmClient:
    return RealmClient(stack)


@pytest.fixture(scope="module")
def surface() -> MlflowSurface:
    return MlflowSurface()


@dataclass(frozen=True)
class Alice:
    client: MlflowClient
    tracing: TracingClient
    token: str


@contextmanager
def as_alice(stack: dict[str, Any], realm: RealmClient) -> Iterator[Alice]:
    token = realm.token("alice")
    with signed_in(token):
        yield Alice(client_for(stack), TracingClient(tracking_uri=stack["gateway_url"]), token)


def make_objects(stack: dict[str, Any], realm: RealmClient, folder: Path, label: str) -> Made:
    """Experiment and run with tags and an artifact, a model version with an alias, a logged model,
    two traces with an assessment and two datasets, all created by alice through the gateway."""
    with as_alice(stack, realm) as alice:
        client = alice.client
        experiment_id = client.create_experiment(f"variants-{label}-{secrets.token_hex(4)}")
        client.set_experiment_tag(experiment_id, "purpose", label)
        run = client.create_run(experiment_id)
        client.set_tag(run.info.run_id, "stage", label)
        artifact = folder / ARTIFACT
        artifact.write_text(f"artifact of {label}\n")
        client.log_artifact(run.info.run_id, str(artifact))
        model = f"variants-{label}-{secrets.token_hex(4)}"
        client.create_registered_model(model)
        version = client.create_model_version(model, f"{run.info.artifact_uri}/{ARTIFACT}", run_id=run.info.run_id)
        client.set_registered_model_alias(model, "champion", version.version)
        logged_model = client.create_logged_model(experiment_id, name=f"variants-{label}")
        # Traces are exported by MLflow's tracer, which follows the global tracking URI.
        with _use_tracking_uri(stack["gateway_url"]):
            traces = []
            for _ in range(2):
                span = client.start_trace(f"variants-{label}", experiment_id=experiment_id)
                client.end_trace(span.trace_id)
                traces.append(span.trace_id)
            mlflow.flush_trace_async_logging()
        assessment = alice.tracing.log_assessment(traces[1], Feedback(name="quality", value=True))
        datasets = [client.create_dataset(f"variants-{label}-{secrets.token_hex(4)}", experiment_id) for _ in range(2)]
    return Made(
        label,
        experiment_id,
        run.info.run_id,
        model,
        version.version,
        logged_model.model_id,
        traces[0],
        traces[1],
        assessment.assessment_id,
        datasets[0].dataset_id,
        datasets[1].dataset_id,
        served_artifact_folder(run.info.artifact_uri),
    )


def delete_routes(made: Made) -> list[DeleteRoute]:
    """Every delete the MLflow client sends for these objects, in an order an Admin can run them."""
    return [
        DeleteRoute("DELETE", "/api/2.0/mlflow/model-versions/delete", {"name": made.model, "version": made.version}),
        DeleteRoute("DELETE", "/api/2.0/mlflow/registered-models/delete", {"name": made.model}),
        DeleteRoute("DELETE", f"/api/2.0/mlflow-artifacts/artifacts/{made.artifact_path}", {}),
        DeleteRoute(
            "DELETE", f"/api/2.0/mlflow/logged-models/{made.logged_model_id}", {"model_id": made.logged_model_id}
        ),
        DeleteRoute(
            "DELETE",
            f"/api/3.0/mlflow/traces/{made.trace_v3}/assessments/{made.assessment_id}",
            {"trace_id": made.trace_v3, "assessment_id": made.assessment_id},
        ),
        DeleteRoute("DELETE", f"/api/3.0/mlflow/datasets/{made.dataset_id}", {"dataset_id": made.dataset_id}),
        DeleteRoute(
            "POST",
            f"/api/3.0/mlflow/datasets/{made.linked_dataset_id}/remove-experiments",
            {"dataset_id": made.linked_dataset_id, "experiment_ids": [made.experiment_id]},
        ),
        DeleteRoute(
            "POST",
            "/api/2.0/mlflow/traces/delete-traces",
            {"experiment_id": made.experiment_id, "request_ids": [made.trace_v2]},
        ),
        DeleteRoute(
            "POST",
            "/api/3.0/mlflow/traces/delete-traces",
            {"experiment_id": made.experiment_id, "request_ids": [made.trace_v3]},
        ),
        DeleteRoute("POST", "/api/2.0/mlflow/runs/delete", {"run_id": made.run_id}),
        DeleteRoute("POST", "/api/2.0/mlflow/experiments/delete", {"experiment_id": made.experiment_id}),
    ]


def _unless_missing(read: Callable[[], T]) -> T | None:
    """None when MLflow says the object does not exist; any other error (a 403 too) propagates."""
    try:
        return read()
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        return None


def snapshot(stack: dict[str, Any], realm: RealmClient, made: Made, folder: Path) -> dict[str, Any]:
    """What alice sees of every object, one entry per thing a delete could remove or change."""
    with as_alice(stack, realm) as alice:
        client = alice.client
        experiment = client.get_experiment(made.experiment_id)
        run = client.get_run(made.run_id)
        listed = sorted(item.path for item in client.list_artifacts(made.run_id))
        text = (
            Path(client.download_artifacts(made.run_id, ARTIFACT, str(folder))).read_text()
            if ARTIFACT in listed
            else None
        )
        return {
            "experiment": experiment.lifecycle_stage,
            "experiment tag": experiment.tags.get("purpose"),
            "run": run.info.lifecycle_stage,
            "run tag": run.data.tags.get("stage"),
            "artifacts": listed,
            "artifact text": text,
            "registered model": _unless_missing(lambda: client.get_registered_model(made.model).name),
            "model version": _unless_missing(lambda: client.get_model_version(made.model, made.version).status),
            "alias": _unless_missing(lambda: client.get_model_version_by_alias(made.model, "champion").version),
            "logged model": _unless_missing(lambda: client.get_logged_model(made.logged_model_id).model_id),
            "trace v2": _unless_missing(lambda: client.get_trace(made.trace_v2, display=False).info.trace_id),
            "trace v3": _unless_missing(lambda: client.get_trace(made.trace_v3, display=False).info.trace_id),
            "assessment": _unless_missing(
                lambda: alice.tracing.get_assessment(made.trace_v3, made.assessment_id).assessment_id
            ),
            "dataset": _unless_missing(lambda: client.get_dataset(made.dataset_id).dataset_id),
            # EvaluationDataset.experiment_ids reads the global tracking store, not the client's;
            # MLflow's JSON leaves out an empty list.
            "dataset link": httpx.get(
                f"{stack['gateway_url']}/api/3.0/mlflow/datasets/{made.linked_dataset_id}/experiment-ids",
                headers={"Authorization": f"Bearer {alice.token}"},
                timeout=30,
            ).json().get("experiment_ids", []),
        }


def intact(made: Made) -> dict[str, Any]:
    return {
        "experiment": "active",
        "experiment tag": made.label,
        "run": "active",
        "run tag": made.label,
        "artifacts": [ARTIFACT],
        "artifact text": f"artifact of {made.label}\n",
        "registered model": made.model,
        "model version": "READY",
        "alias": made.version,
        "logged model": made.logged_model_id,
        "trace v2": made.trace_v2,
        "trace v3": made.trace_v3,
        "assessment": made.assessment_id,
        "dataset": made.dataset_id,
        "dataset link": [made.experiment_id],
    }


@pytest.fixture(scope="module")
def made(stack: dict[str, Any], realm: RealmClient, tmp_path_factory: pytest.TempPathFactory) -> Made:
    return make_objects(stack, realm, tmp_path_factory.mktemp("variants"), "kept")


def is_other_operation(variant: Variant, route: DeleteRoute, surface: MlflowSurface) -> bool:
    """A method variant that MLflow itself routes to a handler that deletes nothing (GET or PUT on
    an artifact path, PATCH on a logged model, ...): a read or write the Default role may do.
    OPTIONS is never one: Flask answers it without running the matched view, and the gate refuses it."""
    if variant.method.upper() in (route.method, "OPTIONS"):
        return False
    handler = surface.dispatch(variant.method, uvicorn_path(variant.target))
    return handler is not None and "delete" not in handler


def _kind_family(kind: str) -> str:
    """`encoded 'a'` and `encoded 'b'` are one kind in the summary."""
    return re.sub(r" '.*?'", "", kind)


def test_no_request_variant_lets_default_or_no_role_users_delete(
    stack: dict[str, Any],
    realm: RealmClient,
    made: Made,
    surface: MlflowSurface,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    assert snapshot(stack, realm, made, tmp_path / "before") == intact(made)
    started = time.monotonic()
    server = address(stack["gateway_url"])
    host = f"{server[0]}:{server[1]}"
    statuses: dict[str, Counter[str]] = {user: Counter() for user in REFUSED_USERS}
    by_kind: dict[str, dict[str, Counter[str]]] = defaultdict(lambda: {user: Counter() for user in REFUSED_USERS})
    skipped: Counter[str] = Counter()
    let_through: list[str] = []

    def attempt(user: str, token: str, variant: Variant, body: bytes) -> tuple[str, Variant, RawResponse]:
        headers = json_request_headers(host, token, body)
        return user, variant, send(server, variant.method, variant.target, headers, body)

    with ThreadPoolExecutor(THREADS) as pool:
        for route in delete_routes(made):
            body = json.dumps(route.body).encode()
            tokens = {user: realm.token(user) for user in REFUSED_USERS}  # fresh: tokens live 300 s
            jobs = []
            for variant in variants(route.method, route.path):
                for user in REFUSED_USERS:
                    if user == "bob" and is_other_operation(variant, route, surface):
                        skipped[f"{variant.method} {route.path}"] += 1
                        continue
                    jobs.append(pool.submit(attempt, user, tokens[user], variant, body))
            for job in jobs:
                user, variant, response = job.result()
                statuses[user][response.label] += 1
                by_kind[_kind_family(variant.kind)][user][response.label] += 1
                if response.status is not None and response.status < 400:
                    let_through.append(
                        f"{user} {variant.method} {variant.target!r} ({variant.kind}) -> {response.status} "
                        f"{response.body[:200]!r}"
                    )
    seconds = time.monotonic() - started

    sent = {user: sum(counts.values()) for user, counts in statuses.items()}
    print(f"\nvariants sent in {seconds:.1f} s: {sent}; bob skipped (other operations): {dict(skipped)}")
    for kind, per_user in by_kind.items():
        print(f"  {kind:40} " + " | ".join(f"{user} {dict(per_user[user])}" for user in REFUSED_USERS))
    for user, counts in statuses.items():
        record_property(f"{user} sent", sent[user])
        for label, count in counts.items():
            record_property(f"{user} {label}", count)
    record_property("bob skipped", sum(skipped.values()))
    record_property("seconds", round(seconds, 1))
    warnings.warn(
        f"delete variants in {seconds:.0f} s: "
        + "; ".join(f"{user} {dict(statuses[user])}" for user in REFUSED_USERS)
        + f"; bob skipped {sum(skipped.values())} other operations",
        stacklevel=1,
    )

    assert sent["carol"] > sent["bob"] > 1000
    assert let_through == []
    assert snapshot(stack, realm, made, tmp_path / "after") == intact(made)


def test_admin_unmodified_delete_requests_delete_every_object(
    stack: dict[str, Any], realm: RealmClient, tmp_path: Path
) -> None:
    """The positive control: the same raw client and bodies, unmodified, as alice, do delete."""
    throwaway = make_objects(stack, realm, tmp_path, "throwaway")
    assert snapshot(stack, realm, throwaway, tmp_path / "before") == intact(throwaway)
    server = address(stack["gateway_url"])
    token = realm.token("alice")
    for route in delete_routes(throwaway):
        response = send_json(server, route.method, route.path, token, route.body, f"{server[0]}:{server[1]}")
        assert response.status == 200, (route, response.head, response.body)

    gone = {
        "experiment": "deleted",
        "run": "deleted",
        "artifacts": [],
        "artifact text": None,
        "registered model": None,
        "model version": None,
        "alias": None,
        "logged model": None,
        "trace v2": None,
        "trace v3": None,
        "assessment": None,
        "dataset": None,
        "dataset link": [],
    }
    assert snapshot(stack, realm, throwaway, tmp_path / "after") == {**intact(throwaway), **gone}


def test_artifact_uploads_downloads_and_listings_follow_roles_but_deletes_are_refused(
    stack: dict[str, Any], realm: RealmClient, tmp_path: Path
) -> None:
    """Default may upload, download and list artifacts (PUT, GET on the same paths a DELETE uses);
    only Admin deletes them, not even a whole run or experiment folder goes; a user without a role
    gets nothing."""
    with as_alice(stack, realm) as alice:
        client = alice.client
        experiment_id = client.create_experiment(f"artifacts-{secrets.token_hex(4)}")
        run = client.create_run(experiment_id)
        run_id = run.info.run_id
        (tmp_path / ARTIFACT).write_text("alice's notes\n")
        client.log_artifact(run_id, str(tmp_path / ARTIFACT))
    gateway = stack["gateway_url"]
    folder = served_artifact_folder(run.info.artifact_uri)
    tokens = {user: realm.token(user) for user in REFUSED_USERS}
    mismatches = []

    def expect(user: str, method: str, url: str, status: int, content: bytes | None = None) -> httpx.Response:
        response = httpx.request(
            method, gateway + url, content=content, headers={"Authorization": f"Bearer {tokens[user]}"}, timeout=30
        )
        if response.status_code != status:
            mismatches.append(f"{user} {method} {url}: {response.status_code} not {status}: {response.text[:200]}")
        return response

    for prefix in ("/api", "/ajax-api"):
        upload = f"{prefix}/2.0/mlflow-artifacts/artifacts/{folder}/bob{prefix.replace('/', '-')}.txt"
        expect("bob", "PUT", upload, 200, content=b"bob's upload\n")
        if expect("bob", "GET", upload, 200).content != b"bob's upload\n":
            mismatches.append(f"bob GET {upload}: not what bob uploaded")
        expect("carol", "PUT", f"{prefix}/2.0/mlflow-artifacts/artifacts/{folder}/carol.txt", 403, content=b"x")
        reads = [
            f"{prefix}/2.0/mlflow-artifacts/artifacts/{folder}/{ARTIFACT}",
            f"{prefix}/2.0/mlflow/artifacts/list?run_id={run_id}",
        ]
        for url in reads:
            expect("bob", "GET", url, 200)
            expect("carol", "GET", url, 403)
        run_folder = folder.rsplit("/", 1)[0]
        for path in (f"{folder}/{ARTIFACT}", folder, run_folder, run_folder.rsplit("/", 1)[0]):
            for user in REFUSED_USERS:
                expect(user, "DELETE", f"{prefix}/2.0/mlflow-artifacts/artifacts/{path}", 403)
    get_artifact = f"/get-artifact?path={ARTIFACT}&run_uuid={run_id}"
    if expect("bob", "GET", get_artifact, 200).content != b"alice's notes\n":
        mismatches.append(f"bob GET {get_artifact}: not alice's notes")
    expect("carol", "GET", get_artifact, 403)

    assert mismatches == []
    with as_alice(stack, realm) as alice:
        listed = sorted(item.path for item in alice.client.list_artifacts(run_id))
        assert listed == ["bob-ajax-api.txt", "bob-api.txt", ARTIFACT]
        kept = alice.client.download_artifacts(run_id, ARTIFACT, str(tmp_path / "after"))
        assert Path(kept).read_text() == "alice's notes\n"
