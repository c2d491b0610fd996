"""Run by a fresh virtualenv's interpreter: what is installed and what the client distribution pulls in.

Prints JSON: every installed distribution, the requirement closure of `mlflow-gate-client`, its
direct requirements, and mlflow-skinny's. Uses only the standard library and `packaging` (which
MLflow requires).
"""

from __future__ import annotations

import json
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def requirements(name: str) -> list[str]:
    """Names a distribution needs unconditionally here (extras left out, markers evaluated)."""
    needed = []
    for text in metadata.requires(name) or []:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            needed.append(canonicalize_name(requirement.name))
    return needed


def closure(root: str) -> set[str]:
    seen: set[str] = set()
    pending = [canonicalize_name(root)]
    while pending:
        name = pending.pop()
        if name not in seen:
            seen.add(name)
            pending.extend(requirements(name))
    return seen


print(json.dumps({
    "installed": sorted({canonicalize_name(dist.metadata["Name"]) for dist in metadata.distributions()}),
    "closure": sorted(closure("mlflow-gate-client")),
    "client_requires": sorted(requirements("mlflow-gate-client")),
    "mlflow_skinny_requires": sorted(requirements("mlflow-skinny")),
}))
