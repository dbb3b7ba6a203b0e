"""deploy/ is checked in every test run: the compose file against the Compose specification's JSON schema, the
Kubernetes manifests against Kubernetes' schemas (offline, ``kubernetes-validate``) and KEDA's CRDs, and both
against the code: every ``IMAGEJOBS_*`` variable exists in ``Settings``, every Procfile process is deployed,
every queue is consumed, workers stop within their grace period, and no secret is written down.

The schemas are vendored (no network in tests): tests/deploy/compose-spec.json is
https://github.com/compose-spec/compose-spec/blob/main/schema/compose-spec.json and tests/deploy/crds/ are
https://github.com/kedacore/keda/tree/main/config/crd/bases (see tests/deploy/SCHEMAS.md).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, get_args

import jsonschema
import kubernetes_validate
import pytest
from pydantic import BaseModel

from shared.config import CelerySettings, Settings
from shared.queue import PRIORITY_LEVELS, all_queue_names
from tests.deploy.manifests import (
    DEPLOY,
    KUBERNETES,
    Manifest,
    compose,
    containers,
    deploy_files,
    identity,
    load_yaml,
    of_kind,
    pod_spec,
    procfile,
    queues_of,
    read_env_file,
    render_kustomization,
)

HERE = Path(__file__).parent
#: the oldest Kubernetes minor release the manifests must be valid for
KUBERNETES_VERSION = "1.30.0"
BASE = render_kustomization(KUBERNETES)
WITH_EMULATOR = render_kustomization(KUBERNETES / "emulator")

# ---------------------------------------------------------------------------------------------------
# compose.yaml
# ---------------------------------------------------------------------------------------------------


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    schema = json.loads((HERE / "compose-spec.json").read_text())
    errors = [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in jsonschema.Draft7Validator(schema).iter_errors(compose())
    ]

    assert errors == []


def _one_shots(services: dict[str, Any]) -> set[str]:
    awaited = {
        name
        for service in services.values()
        for name, condition in (service.get("depends_on") or {}).items()
        if condition.get("condition") == "service_completed_successfully"
    }
    return {name for name in awaited if services[name].get("restart") == "no"}


def test_every_long_running_compose_service_has_a_healthcheck_and_one_shots_are_awaited() -> None:
    services = compose()["services"]
    one_shots = _one_shots(services)

    assert one_shots == {"migrate", "buckets"}
    for name, service in services.items():
        if name not in one_shots:
            assert "test" in service.get("healthcheck", {}), f"{name} has no healthcheck"
    # every app service waits for the schema (and the bucket), and for healthy stores
    app_services = {name for name, service in services.items() if service.get("image") == "imagejobs:local"}
    for name in app_services - one_shots - {"emulator"}:
        depends = services[name]["depends_on"]
        assert depends["migrate"] == {"condition": "service_completed_successfully"}, name
        assert depends["buckets"] == {"condition": "service_completed_successfully"}, name
        for store in ("redis", "postgres", "minio"):
            assert depends[store] == {"condition": "service_healthy"}, (name, store)


def test_compose_writes_down_no_secret_and_binds_published_ports_to_loopback() -> None:
    services = compose()["services"]
    secret_like = re.compile(r"PASSWORD|SECRET|_KEY|API_KEYS|ACCESS_KEY_ID")
    for name, service in services.items():
        environment = service.get("environment") or {}
        for key, value in environment.items():
            text = str(value)
            if secret_like.search(key):
                assert re.fullmatch(r"\$\{[A-Z0-9_]+(:\?[^}]*|:-[^}]*)?\}", text), f"{name}.{key} = {text!r}"
                if ":-" in text:  # a default is fine only for a name, never for a secret
                    assert key.endswith("_USER"), f"{name}.{key} has a default"
            for password in re.findall(r"://[^:/@]*:([^@]+)@", text):  # credentials inside URLs
                assert password.startswith("${") and ":?" in password, f"{name}.{key} carries a password"
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_redis_has_a_password_and_durable_queues() -> None:
    redis = compose()["services"]["redis"]
    conf = (DEPLOY / "redis.conf").read_text()

    assert "requirepass" in " ".join(redis["command"]) and "--include" in " ".join(redis["command"])
    assert redis["environment"]["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?")
    assert re.search(r"^appendonly yes$", conf, re.MULTILINE)
    assert re.search(r"^maxmemory-policy noeviction$", conf, re.MULTILINE)
    assert re.search(r"^protected-mode yes$", conf, re.MULTILINE)
    assert not re.search(r"^\s*requirepass", conf, re.MULTILINE)


def test_the_image_runs_as_a_user_that_owns_what_it_writes() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()

    user = re.search(r"^USER (\d+)", dockerfile, re.MULTILINE)
    assert user is not None and user.group(1) != "0"
    assert re.search(rf"useradd --uid {user.group(1)}\b", dockerfile)
    assert "chown -R imagejobs:imagejobs /app/var" in dockerfile
    # every path a compose service writes is under that directory, and no app service shares it with another
    # (two workers touching one heartbeat file would hide a dead one)
    for name, service in compose()["services"].items():
        command = " ".join([*(service.get("command") or []), *map(str, (service.get("environment") or {}).values())])
        for path in re.findall(r"(/app/[\w./-]+)", command):
            assert path.startswith("/app/var/"), (name, path)
        if service.get("image") == "imagejobs:local":
            assert not any(str(volume).split(":")[1].startswith("/app") for volume in service.get("volumes", [])), name


# ---------------------------------------------------------------------------------------------------
# Kubernetes (kustomize base, and the overlay that adds the emulator)
# ---------------------------------------------------------------------------------------------------


def _crd_schema(kind: str) -> dict[str, Any]:
    crd = load_yaml(HERE / "crds" / f"keda.sh_{kind.lower()}s.yaml")
    [version] = [version for version in crd["spec"]["versions"] if version["name"] == "v1alpha1"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


@pytest.mark.parametrize("manifest", WITH_EMULATOR, ids=lambda m: f"{m['kind']}/{m['metadata']['name']}")
def test_each_manifest_is_valid_against_its_schema(manifest: Manifest) -> None:
    if manifest["apiVersion"].startswith("keda.sh/"):
        errors = [
            error.message for error in jsonschema.Draft7Validator(_crd_schema(manifest["kind"])).iter_errors(manifest)
        ]
        assert errors == []
    else:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def test_every_procfile_process_has_a_compose_service_and_a_deployment() -> None:
    services = compose()["services"]
    deployments = of_kind(WITH_EMULATOR, "Deployment")
    for entry in procfile():
        wanted = identity(entry.tokens)
        in_compose = [name for name, service in services.items() if identity(service.get("command") or []) == wanted]
        in_kubernetes = [
            name
            for name, deployment in deployments.items()
            if any(identity(container["command"]) == wanted for container in containers(deployment))
        ]
        assert in_compose, f"no compose service runs the Procfile's {entry.name} ({' '.join(wanted)})"
        assert in_kubernetes, f"no Deployment runs the Procfile's {entry.name} ({' '.join(wanted)})"
    # the emulator is only in the overlay, never in the base
    assert "imagejobs-emulator" not in of_kind(BASE, "Deployment")
    assert services["emulator"]["profiles"] == ["emulator"]


def _worker_deployments() -> dict[str, Manifest]:
    return {
        name: deployment
        for name, deployment in of_kind(BASE, "Deployment").items()
        if identity(containers(deployment)[0]["command"]) == ("celery", "worker.app", "worker")
    }


def test_every_queue_is_consumed_by_exactly_one_worker_group_in_compose_and_in_kubernetes() -> None:
    compose_groups = [
        queues_of(service["command"])
        for service in compose()["services"].values()
        if identity(service.get("command") or []) == ("celery", "worker.app", "worker")
    ]
    kubernetes_groups = [queues_of(containers(d)[0]["command"]) for d in _worker_deployments().values()]
    for groups in (compose_groups, kubernetes_groups):
        consumed = [queue for group in groups if group is not None for queue in group]
        assert sorted(consumed) == sorted(all_queue_names())


def test_probes_budgets_and_grace_periods() -> None:
    deployments = of_kind(BASE, "Deployment")
    config = of_kind(BASE, "ConfigMap")["imagejobs-config"]["data"]
    soft_shutdown_s = float(
        config.get("IMAGEJOBS_CELERY__SOFT_SHUTDOWN_TIMEOUT_S", CelerySettings().soft_shutdown_timeout_s)
    )
    heartbeat = config["IMAGEJOBS_CELERY__HEARTBEAT_FILE"]

    api = containers(deployments["imagejobs-api"])[0]
    assert api["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    workers = _worker_deployments()
    assert len(workers) >= 2
    for name, deployment in workers.items():
        [worker] = containers(deployment)
        for probe in ("readinessProbe", "livenessProbe"):
            command = worker[probe]["exec"]["command"]
            assert command[:4] == ["python", "-m", "worker.liveness", heartbeat], (name, probe)
        assert {"name": "REMAP_SIGTERM", "value": "SIGQUIT"} in worker["env"], name
        # the soft shutdown, then handing the held messages back, must end before the kubelet's SIGKILL
        assert pod_spec(deployment)["terminationGracePeriodSeconds"] > soft_shutdown_s + 10, name
    for name, deployment in deployments.items():
        for container in containers(deployment):
            assert "livenessProbe" in container, name
            if name != "imagejobs-beat":
                assert "readinessProbe" in container, name
    budgets = of_kind(BASE, "PodDisruptionBudget")
    protected = {budget["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] for budget in budgets.values()}
    assert {"imagejobs-api", *workers} <= protected
    for budget in budgets.values():
        labels = budget["spec"]["selector"]["matchLabels"]
        assert any(
            labels.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
            for deployment in deployments.values()
        ), budget["metadata"]["name"]


def test_beat_is_exactly_one_replica_replaced_not_rolled() -> None:
    beat = of_kind(BASE, "Deployment")["imagejobs-beat"]

    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    scaled = [
        m for m in of_kind(BASE, "ScaledObject").values() if m["spec"]["scaleTargetRef"]["name"] == "imagejobs-beat"
    ]
    assert scaled == []


def test_workers_autoscale_on_the_length_of_every_redis_list_they_consume() -> None:
    scaled = of_kind(BASE, "ScaledObject")
    workers = _worker_deployments()

    assert set(workers) == {scaled_object["spec"]["scaleTargetRef"]["name"] for scaled_object in scaled.values()}
    for scaled_object in scaled.values():
        target = workers[scaled_object["spec"]["scaleTargetRef"]["name"]]
        queues = queues_of(containers(target)[0]["command"])
        assert queues is not None
        # kombu's Redis transport: "<queue>" for priority step 0, "<queue>\x06\x16<step>" for the others
        expected = {
            queue if step == 0 else f"{queue}\x06\x16{step}" for queue in queues for step in PRIORITY_LEVELS.values()
        }
        triggers = scaled_object["spec"]["triggers"]
        assert {trigger["metadata"]["listName"] for trigger in triggers} == expected
        assert {trigger["authenticationRef"]["name"] for trigger in triggers} <= set(
            of_kind(BASE, "TriggerAuthentication")
        )
        assert scaled_object["spec"]["minReplicaCount"] >= 1  # never to zero: a held countdown poll needs a worker


def test_every_config_and_secret_reference_resolves() -> None:
    for objects in (BASE, WITH_EMULATOR):
        config_maps, secrets = of_kind(objects, "ConfigMap"), of_kind(objects, "Secret")
        for deployment in [*of_kind(objects, "Deployment").values(), *of_kind(objects, "Job").values()]:
            for container in containers(deployment):
                for source in container.get("envFrom", []):
                    if "configMapRef" in source and not source["configMapRef"].get("optional"):
                        assert source["configMapRef"]["name"] in config_maps
                    if "secretRef" in source:
                        assert source["secretRef"]["name"] in secrets
        for authentication in of_kind(objects, "TriggerAuthentication").values():
            for ref in authentication["spec"]["secretTargetRef"]:
                assert ref["key"] in secrets[ref["name"]]["stringData"], ref


def test_kubernetes_writes_down_no_secret() -> None:
    for config_map in of_kind(WITH_EMULATOR, "ConfigMap").values():
        for key in config_map["data"]:
            assert not re.search(r"PASSWORD|SECRET|_KEY|API_KEYS|REDIS_URL|DATABASE_URL|BROKER_URL", key), key
    example = read_env_file(KUBERNETES / "secrets.env.example")
    for key, value in example.items():
        if re.search(r"PASSWORD|SECRET|_KEY|API_KEYS|ACCESS_KEY_ID", key):
            assert value == "", f"secrets.env.example sets {key}"


# ---------------------------------------------------------------------------------------------------
# Every IMAGEJOBS_* variable named in deploy/ is a setting
# ---------------------------------------------------------------------------------------------------


def _is_setting(name: str) -> bool:
    model: type[BaseModel] = Settings
    parts = name.removeprefix("IMAGEJOBS_").lower().split("__")
    for depth, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return False
        if depth == len(parts) - 1:
            return True
        sections = [arg for arg in (field.annotation, *get_args(field.annotation)) if isinstance(arg, type)]
        nested = [section for section in sections if issubclass(section, BaseModel)]
        if not nested:
            return False
        model = nested[0]
    return False


def test_every_imagejobs_variable_in_deploy_is_a_setting() -> None:
    # the Procfile's own ``${IMAGEJOBS_API_PORT:-8000}``-style ports are read by the process command, not Settings
    procfile_only = {name for entry in procfile() for name in entry.interpolated}
    unknown = {
        f"{path.relative_to(DEPLOY)}: {name}"
        for path in deploy_files()
        for name in set(re.findall(r"\bIMAGEJOBS_[A-Z0-9_]*[A-Z0-9]", path.read_text()))
        if not _is_setting(name) and name not in procfile_only
    }

    assert sorted(unknown) == []


def test_the_setting_check_itself_tells_settings_from_typos() -> None:
    assert _is_setting("IMAGEJOBS_REDIS_URL")
    assert _is_setting("IMAGEJOBS_KLING__ACCESS_KEY")
    assert _is_setting("IMAGEJOBS_CELERY__HEARTBEAT_FILE")
    assert not _is_setting("IMAGEJOBS_REDIS_URLS")
    assert not _is_setting("IMAGEJOBS_KLING__ACCESSKEY")
    assert not _is_setting("IMAGEJOBS_REDIS_URL__X")


def test_read_only_containers_run_as_the_images_user_with_a_writable_tmp_and_var() -> None:
    dockerfile_user = re.search(r"^USER (\d+)", (DEPLOY / "Dockerfile").read_text(), re.MULTILINE)
    assert dockerfile_user is not None
    for objects_of_kind in (of_kind(WITH_EMULATOR, "Deployment"), of_kind(BASE, "Job")):
        for name, workload in objects_of_kind.items():
            assert pod_spec(workload)["securityContext"]["runAsUser"] == int(dockerfile_user.group(1)), name
            for container in containers(workload):
                if container["securityContext"].get("readOnlyRootFilesystem"):
                    mounts = {mount["mountPath"] for mount in container.get("volumeMounts", [])}
                    # uploads spool to /tmp (python-multipart); beat, heartbeat and local files go to /app/var
                    assert "/tmp" in mounts, name
                    command = " ".join(container["command"])
                    if "/app/var" in command or name.startswith("imagejobs-worker"):
                        assert "/app/var" in mounts, name
