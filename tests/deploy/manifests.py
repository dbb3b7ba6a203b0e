"""Reading deploy/ the way its tools do: the compose file, the kustomize base (rendered in Python), the Procfile.

The kustomize rendering covers what deploy/kubernetes uses: ``resources`` (files and directories holding a
kustomization.yaml, recursively), ``secretGenerator`` with ``envs`` and common ``labels``. ``secrets.env`` is
not in the repository (it holds secrets); the test renders the generator from ``secrets.env.example``.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support import REPO

DEPLOY = REPO / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
Manifest = dict[str, Any]


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def compose() -> dict[str, Any]:
    document: dict[str, Any] = load_yaml(DEPLOY / "compose.yaml")
    return document


def render_kustomization(directory: Path) -> list[Manifest]:
    """The objects ``kustomize build directory`` would emit (for the features this repository uses)."""
    kustomization = load_yaml(directory / "kustomization.yaml")
    unsupported = set(kustomization) - {"apiVersion", "kind", "labels", "resources", "secretGenerator", "images"}
    assert not unsupported, f"{directory}: the test's renderer does not know {sorted(unsupported)}"
    objects: list[Manifest] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            objects.extend(render_kustomization(path))
        else:
            objects.extend(document for document in yaml.safe_load_all(path.read_text()) if document)
    for generator in kustomization.get("secretGenerator", []):
        objects.append(_generated_secret(directory, generator))
    for label_set in kustomization.get("labels", []):
        for manifest in objects:
            manifest.setdefault("metadata", {}).setdefault("labels", {}).update(label_set["pairs"])
    return objects


def _generated_secret(directory: Path, generator: dict[str, Any]) -> Manifest:
    data: dict[str, str] = {}
    for env_file in generator.get("envs", []):
        path = directory / env_file
        if not path.exists():
            path = path.with_name(path.name + ".example")
        data.update(read_env_file(path))
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": generator["name"]}, "stringData": data}


def read_env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value
    return pairs


def of_kind(objects: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {manifest["metadata"]["name"]: manifest for manifest in objects if manifest["kind"] == kind}


def pod_spec(manifest: Manifest) -> dict[str, Any]:
    spec: dict[str, Any] = manifest["spec"]["template"]["spec"]
    return spec


def containers(manifest: Manifest) -> list[dict[str, Any]]:
    return list(pod_spec(manifest)["containers"])


# ---------------------------------------------------------------------------------------------------
# Commands: which Procfile process a compose service or a container runs, and the queues a worker consumes
# ---------------------------------------------------------------------------------------------------

_VALUE_LIKE = re.compile(r"^[\d.:%@]+$")


def identity(tokens: list[str]) -> tuple[str, ...]:
    """What a command runs, without its tunables: the first three words that are neither options, nor
    interpolated, nor addresses (``celery -A worker.app worker …`` → ``celery worker.app worker``)."""
    words = [token for token in tokens if not token.startswith("-") and "$" not in token]
    return tuple(word for word in words if not _VALUE_LIKE.match(word))[:3]


@dataclass(frozen=True)
class ProcfileEntry:
    name: str
    tokens: list[str]
    interpolated: frozenset[str]


def procfile() -> list[ProcfileEntry]:
    entries = []
    for line in (REPO / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, command = line.partition(":")
            variables = frozenset(re.findall(r"\$\{(IMAGEJOBS_[A-Z0-9_]+)", command))
            entries.append(ProcfileEntry(name.strip(), shlex.split(command), variables))
    return entries


def queues_of(tokens: list[str]) -> list[str] | None:
    """The ``-Q`` queues of a worker command (None: it consumes every queue)."""
    for flag in ("-Q", "--queues"):
        if flag in tokens:
            return tokens[tokens.index(flag) + 1].split(",")
    return None


def deploy_files() -> Iterator[Path]:
    for path in sorted(DEPLOY.rglob("*")):
        if path.is_file() and path.name not in (".env", "providers.env", "secrets.env"):
            yield path
