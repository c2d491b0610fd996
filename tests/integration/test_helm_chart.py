"""The Helm chart (deploy/helm/mlflow-gate), checked with the real helm and the real NGINX:
`helm lint` and `helm template` for the default values and every documented example, the NGINX
configuration the chart renders through `nginx -t`, the gate's environment through the gate's own
settings validation, pinned images, hardened pods, and the ingress-nginx alternative.

helm is built once into the cache with `go install` (stack/install.py) when it is missing.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz_service.settings import Settings

from stack import install
from stack.layout import Layout

from .deployment_checks import is_pinned, nginx_config_test, self_signed_certificate

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "mlflow-gate"
EXAMPLES = REPO / "deploy" / "helm" / "examples"
TEMPLATE = REPO / "nginx" / "gateway.conf.template"
ROUTE_MAP = REPO / "authz_service" / "route_map.txt"
VALUE_SETS = ["defaults", *sorted(path.stem for path in EXAMPLES.glob("*.yaml"))]
# Stand-ins for what the pods read from the Secret.
SECRET_VALUES = {
    "GATE_CLIENT_SECRET": "from-the-secret",
    "GATE_BASIC_SECRET": "from-the-secret-at-least-32-characters",
    "GATE_REDIS_URL": "redis://:pw@redis.redis:6379/0",
}
IDENTITY_HEADERS = ["X-Auth-Request-User", "X-Auth-Request-Email", "X-Auth-Request-Roles"]

Manifest = dict[str, Any]


@pytest.fixture(scope="module")
def helm() -> str:
    return str(install.ensure_helm(Layout.discover()))


def value_args(value_set: str) -> list[str]:
    return [] if value_set == "defaults" else ["--values", str(EXAMPLES / f"{value_set}.yaml")]


def helm_run(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True, check=False, timeout=120)


def render(helm: str, *args: str) -> list[Manifest]:
    result = helm_run(helm, "template", "mlflow-gate", str(CHART), "--namespace", "mlflow", *args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def one(manifests: list[Manifest], kind: str, component: str | None = None) -> Manifest:
    found = [
        m
        for m in manifests
        if m["kind"] == kind
        and (component is None or m["metadata"]["name"].endswith(f"-{component}"))
    ]
    assert len(found) == 1, f"expected one {kind} {component or ''}, found {len(found)}"
    return found[0]


def pod_specs(manifests: list[Manifest]) -> list[Manifest]:
    """The pod specs of the Deployments and of the `helm test` pod."""
    specs = [m["spec"]["template"]["spec"] for m in manifests if m["kind"] == "Deployment"]
    return specs + [m["spec"] for m in manifests if m["kind"] == "Pod"]


def containers(manifests: list[Manifest]) -> list[Manifest]:
    return [container for spec in pod_specs(manifests) for container in spec["containers"]]


@pytest.fixture(scope="module", params=VALUE_SETS)
def value_set(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def manifests(helm: str, value_set: str) -> list[Manifest]:
    return render(helm, *value_args(value_set))


def test_chart_reads_the_repository_template() -> None:
    linked = CHART / "files" / "gateway.conf.template"
    assert linked.resolve() == TEMPLATE.resolve()


def test_helm_lint(helm: str, value_set: str) -> None:
    result = helm_run(helm, "lint", "--strict", str(CHART), *value_args(value_set))
    assert result.returncode == 0, result.stdout + result.stderr


def test_images_are_pinned(manifests: list[Manifest]) -> None:
    images = [c["image"] for c in containers(manifests)]
    assert images
    assert all(is_pinned(image) for image in images), images


def test_unpinned_image_is_refused(helm: str) -> None:
    result = helm_run(helm, "template", str(CHART), "--set", "gate.image.tag=latest")
    assert result.returncode != 0
    assert "must be pinned" in result.stderr


@pytest.mark.parametrize(
    "setting", ["mode=nginxx", "gates.replicaCount=3", "publicUrl=mlflow.example.org", "secret.name="]
)
def test_invalid_values_are_refused(helm: str, setting: str) -> None:
    result = helm_run(helm, "template", str(CHART), "--set", setting)
    assert result.returncode != 0
    assert "schema" in result.stderr


def test_gate_environment_passes_the_gates_settings_validation(manifests: list[Manifest], tmp_path: Path) -> None:
    deployment = one(manifests, "Deployment", "gate")
    (gate,) = deployment["spec"]["template"]["spec"]["containers"]
    mounts = [mount["mountPath"] for mount in gate.get("volumeMounts", [])]
    environment = {}
    for variable in gate["env"]:
        name = variable["name"]
        if "valueFrom" in variable:
            assert set(variable["valueFrom"]) == {"secretKeyRef"}, name
            environment[name] = SECRET_VALUES[name]
        elif name.endswith("_FILE"):
            # A file the pod reads from a mounted volume; the test provides one in its place.
            assert any(variable["value"].startswith(mount + "/") for mount in mounts), variable
            stand_in = tmp_path / Path(variable["value"]).name
            stand_in.write_text("stand-in\n")
            environment[name] = str(stand_in)
        else:
            environment[name] = variable["value"]
    settings = Settings.from_env(environment)
    assert settings.sso_enabled and settings.basic_enabled
    assert settings.redis_url
    assert settings.host == "0.0.0.0"
    assert gate["ports"][0]["containerPort"] == settings.port
    assert {v["name"] for v in gate["env"] if "valueFrom" in v} >= {"GATE_CLIENT_SECRET", "GATE_BASIC_SECRET"}


def test_gate_pods_are_hardened_and_probed(manifests: list[Manifest]) -> None:
    assert len(pod_specs(manifests)) >= 2
    for pod in pod_specs(manifests):
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] > 0
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert container["resources"]["requests"]
    (gate,) = one(manifests, "Deployment", "gate")["spec"]["template"]["spec"]["containers"]
    assert gate["readinessProbe"]["httpGet"]["path"] == "/_gate/ready"
    assert gate["livenessProbe"]["httpGet"]["path"] == "/_gate/health"
    assert one(manifests, "PodDisruptionBudget", "gate")["spec"]["maxUnavailable"] == 1


def test_helm_test_pod_checks_the_chain_in_front_of_mlflow(manifests: list[Manifest], value_set: str) -> None:
    pod = one(manifests, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    target = pod["spec"]["containers"][0]["command"][-1]
    if example_values(value_set).get("mode") == "ingress-nginx":
        assert target == "http://mlflow-gate-gate.mlflow.svc.cluster.local:8090/_gate/health"
    else:
        assert re.fullmatch(r"https?://mlflow-gate-nginx:\d+/health", target), target


def test_autoscaling_replaces_the_fixed_replica_count(helm: str) -> None:
    fixed = render(helm)
    assert one(fixed, "Deployment", "gate")["spec"]["replicas"] == 2
    assert not [m for m in fixed if m["kind"] == "HorizontalPodAutoscaler"]
    scaled = render(helm, "--set", "gate.autoscaling.enabled=true")
    assert "replicas" not in one(scaled, "Deployment", "gate")["spec"]
    assert one(scaled, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"].endswith("-gate")


def example_values(value_set: str) -> dict[str, Any]:
    return {} if value_set == "defaults" else yaml.safe_load((EXAMPLES / f"{value_set}.yaml").read_text())


NGINX_VALUE_SETS = [name for name in VALUE_SETS if example_values(name).get("mode", "nginx") == "nginx"]


@pytest.mark.parametrize("tls", [False, True], ids=["as-given", "tls"])
@pytest.mark.parametrize("nginx_value_set", NGINX_VALUE_SETS)
def test_rendered_nginx_config_passes_nginx_t(helm: str, nginx_value_set: str, tls: bool, tmp_path: Path) -> None:
    values = example_values(nginx_value_set)
    # The pod mounts the TLS Secret at nginx.tls.mountPath; a throwaway certificate stands in.
    certificates = tmp_path / "tls"
    self_signed_certificate(certificates)
    args = [*value_args(nginx_value_set), "--set", f"nginx.tls.mountPath={certificates}"]
    if tls:
        args += ["--set", "nginx.tls.secretName=gateway-tls"]
    conf = one(render(helm, *args), "ConfigMap", "nginx")["data"]["gateway.conf"]
    assert "${" not in conf
    expect_tls = tls or bool(values.get("nginx", {}).get("tls", {}).get("secretName"))
    assert ("listen 8080 ssl;" in conf) is expect_tls
    assert (f"ssl_certificate {certificates}/tls.crt;" in conf) is expect_tls
    result = nginx_config_test(conf, tmp_path / "nginx")
    assert result.returncode == 0, result.stderr


def test_nginx_mode_has_no_ingress_nginx_auth(manifests: list[Manifest], value_set: str) -> None:
    auth = [m for m in manifests if m["kind"] == "Ingress" and "auth-url" in str(m["metadata"].get("annotations"))]
    nginx = [m for m in manifests if m["kind"] == "Deployment" and m["metadata"]["name"].endswith("-nginx")]
    assert bool(auth) != bool(nginx), "exactly one of NGINX and ingress-nginx guards MLflow"


def blanked_by_template() -> list[str]:
    """Headers the template's MLflow location never passes on from the client (transport
    headers, which ingress-nginx manages itself, aside)."""
    location = TEMPLATE.read_text().split("location / {", 1)[1].split("\n    }", 1)[0]
    blanked = re.findall(r'proxy_set_header (\S+) "";', location)
    return [name for name in blanked if name not in ("Connection", "Accept-Encoding")]


@pytest.fixture(scope="module")
def ingress_nginx(helm: str) -> dict[str, Manifest]:
    manifests = render(helm, *value_args("ingress-nginx"))
    assert not [m for m in manifests if m["kind"] == "ConfigMap"]
    return {m["metadata"]["name"].rsplit("-", 1)[1]: m for m in manifests if m["kind"] == "Ingress"}


def test_ingress_nginx_asks_the_gate_with_the_same_header_hygiene(ingress_nginx: dict[str, Manifest]) -> None:
    assert set(ingress_nginx) == {"api", "ui", "signin"}
    for name in ("api", "ui"):
        annotations = ingress_nginx[name]["metadata"]["annotations"]
        prefix = "nginx.ingress.kubernetes.io/"
        assert annotations[prefix + "auth-url"] == "http://mlflow-gate-gate.mlflow.svc.cluster.local:8090/_gate/check"
        # With auth-method set, ingress-nginx sends X-Original-URI itself instead of the client's.
        assert annotations[prefix + "auth-method"] == "GET"
        forwarded = annotations[prefix + "auth-response-headers"].split(",")
        assert forwarded[:3] == IDENTITY_HEADERS
        assert set(forwarded) == set(IDENTITY_HEADERS) | set(blanked_by_template())
        assert annotations[prefix + "upstream-vhost"] == "mlflow:5000"
    api, ui = (ingress_nginx[name]["metadata"]["annotations"] for name in ("api", "ui"))
    assert "nginx.ingress.kubernetes.io/auth-signin" not in api, "API clients keep their 401"
    assert ui["nginx.ingress.kubernetes.io/auth-signin"] == "https://mlflow.example.org/oauth2/start?rd=$escaped_request_uri"
    signin = ingress_nginx["signin"]
    assert not any("auth-" in key for key in signin["metadata"].get("annotations", {}))
    (path,) = signin["spec"]["rules"][0]["http"]["paths"]
    assert path["path"] == "/oauth2/"
    assert path["backend"]["service"]["name"] == "mlflow-gate-gate"


def test_ingress_nginx_api_paths_cover_every_non_ui_route(ingress_nginx: dict[str, Manifest]) -> None:
    prefixes = [p["path"] for p in ingress_nginx["api"]["spec"]["rules"][0]["http"]["paths"]]
    ui_paths = ("/", "/static-files/", "/build/")
    uncovered = []
    for line in ROUTE_MAP.read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) != 3:
            continue
        path = fields[1]
        paths = [f"/api{path}", f"/ajax-api{path}"] if re.match(r"/\d+\.\d+/", path) else [path]
        for candidate in paths:
            covered = any(candidate == p.rstrip("/") or candidate.startswith(p.rstrip("/") + "/") for p in prefixes)
            if not covered and not (candidate == "/" or candidate.startswith(ui_paths[1:])):
                uncovered.append(candidate)
    assert not uncovered
