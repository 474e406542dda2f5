"""The overlays as a cluster would receive them (`kubectl kustomize`), and the CRD schemas.

Rendering uses kubectl's built-in kustomize, offline. Custom resources are checked against the
vendored CRDs' openAPIV3Schema with jsonschema (Draft 4, the closest to OpenAPI 3.0), after closing
every object schema (`additionalProperties: false` where the CRD neither allows extra fields nor
preserves unknown ones) so that a misspelt field fails as an API server would reject or prune it.
"""

from __future__ import annotations

import copy
import functools
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("production", "dev")
CRDS = Path(__file__).resolve().parent / "crds"
#: Strimzi 0.51's CRDs, which serve v1 beside the v1beta2 of older clusters.
CRDS_STRIMZI_0_51 = Path(__file__).resolve().parent / "crds-strimzi-0.51.0"
#: Kubernetes version the core objects are validated against (kubernetes-validate, strict).
KUBERNETES_VERSION = "1.32.0"

Doc = dict[str, Any]


def kustomize(path: Path) -> str:
    kubectl = shutil.which("kubectl")
    assert kubectl is not None, "kubectl missing (its built-in kustomize renders the overlays)"
    result = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


@functools.cache
def rendered_text(overlay: str) -> str:
    return kustomize(K8S / "overlays" / overlay)


def rendered(overlay: str) -> list[Doc]:
    """The overlay's objects (fresh copies: tests may not share mutations)."""
    return [d for d in yaml.safe_load_all(rendered_text(overlay)) if d]


def by_kind(docs: list[Doc], kind: str) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _closed(schema: Any) -> Any:
    """A copy with `additionalProperties: false` on every object schema listing properties."""
    if isinstance(schema, dict):
        out = {k: _closed(v) for k, v in schema.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        if isinstance(out.get("pattern"), str) and out["pattern"].startswith("^(?i)"):
            out["pattern"] = "(?i)^" + out["pattern"][len("^(?i)"):]  # RE2 → Python re
        return out
    if isinstance(schema, list):
        return [_closed(v) for v in schema]
    return schema


@functools.cache
def _validators(crds: Path = CRDS) -> dict[tuple[str, str], jsonschema.Draft4Validator]:
    """(apiVersion, kind) → validator of the served version's schema, for every CRD in `crds`."""
    validators = {}
    for path in sorted(crds.rglob("*.yaml")):
        crd = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not crd or crd.get("kind") != "CustomResourceDefinition":
            continue
        spec = crd["spec"]
        for version in spec["versions"]:
            if version.get("served"):
                schema = _closed(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
                # metadata is checked by the API server, not by the CRD schema.
                schema.setdefault("properties", {})["metadata"] = {"type": "object"}
                jsonschema.Draft4Validator.check_schema(schema)
                validators[(f"{spec['group']}/{version['name']}", spec["names"]["kind"])] = \
                    jsonschema.Draft4Validator(schema)
    return validators


def crd_kinds() -> set[tuple[str, str]]:
    return set(_validators())


def crd_errors(doc: Doc, crds: Path = CRDS) -> list[str]:
    """Schema violations of one custom resource (KeyError if no CRD in `crds` serves it)."""
    validator = _validators(crds)[(doc["apiVersion"], doc["kind"])]
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(doc)]
