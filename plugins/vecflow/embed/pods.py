"""The one pod factory for GPU embedding jobs: a KubernetesPodOperator per shard.

Everything a GPU node pool needs is set here, from the environment (so DAG files stay wiring):

| variable | default | what |
| --- | --- | --- |
| VECFLOW_EMBED_IMAGE | vecflow-embed:latest | the image built from include/models/Dockerfile |
| VECFLOW_K8S_CONN_ID | kubernetes_default | Airflow Connection to the cluster |
| VECFLOW_K8S_NAMESPACE | vecflow | namespace of the pods |
| VECFLOW_K8S_GPUS | 1 | nvidia.com/gpu request = limit |
| VECFLOW_K8S_CPU / VECFLOW_K8S_MEMORY | 8 / 32Gi | requests (decode workers need CPU) |
| VECFLOW_K8S_NODE_SELECTOR | {"nvidia.com/gpu.present": "true"} | JSON object |
| VECFLOW_K8S_TOLERATIONS | [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}] | JSON list |
| VECFLOW_K8S_MODEL_PVC | vecflow-models | model registry volume, mounted read-only at /models |
| VECFLOW_K8S_DATA_PVC | vecflow-data | VECFLOW_HOME's volume, mounted at the same path (manifests, outputs) |
| VECFLOW_K8S_SHM | 16Gi | /dev/shm size (DataLoader workers pass batches through it) |
| VECFLOW_K8S_WORKERS | 8 | DataLoader workers in the pod |
| VECFLOW_K8S_MAX_PODS / VECFLOW_K8S_POOL | 16 / default_pool | concurrency of a run's pods, and the pool they count against |
"""
from __future__ import annotations

import datetime as dt
import json
import os

from vecflow.config import ConfigError, settings

MODEL_MOUNT = "/models"
CONTAINER_TAXONOMY = "/app/taxonomy.json"


def _json_env(name: str, default):
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{name} is not valid JSON: {exc}") from None


def pod_arguments(shard: dict) -> list[str]:
    """Arguments of the entrypoint for one shard; run_id and attempt come from the pod's environment.
    The shard names its model and number (a reindex maps shards of many partitions, so the map index
    is not the shard id). Used with XComArg.map, so it runs where the shards are known."""
    s = settings()
    return [
        "--manifest", shard["manifest"], "--output", shard["output"],
        "--model-version", shard.get("model_version") or s.model_version, "--shard-id", str(shard["shard_id"]),
        "--catalog-root", str(s.catalog_dir), "--taxonomy", CONTAINER_TAXONOMY, "--registry", MODEL_MOUNT,
        "--device", "cuda", "--batch-size", str(s.embed_batch_size),
        "--workers", os.environ.get("VECFLOW_K8S_WORKERS", "8"),
    ]


def embed_pod_operator(task_id: str = "embed_shard", **overrides):
    """One KubernetesPodOperator configured for the embedding job (e.g. to rerun a single shard)."""
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    return KubernetesPodOperator(task_id=task_id, **{**pod_kwargs(), **overrides})


def embed_pod_partial(task_id: str = "embed_shard"):
    """The mapped form: `embed_pod_partial().expand(arguments=shards.map(pod_arguments))`."""
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    return KubernetesPodOperator.partial(task_id=task_id, **pod_kwargs())


def pod_kwargs() -> dict:
    from kubernetes.client import models as k8s

    s = settings()
    gpus = os.environ.get("VECFLOW_K8S_GPUS", "1")
    node_selector = _json_env("VECFLOW_K8S_NODE_SELECTOR", {"nvidia.com/gpu.present": "true"})
    tolerations = _json_env("VECFLOW_K8S_TOLERATIONS",
                            [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}])
    if not isinstance(node_selector, dict) or not isinstance(tolerations, list):
        raise ConfigError("VECFLOW_K8S_NODE_SELECTOR must be a JSON object and VECFLOW_K8S_TOLERATIONS a JSON list")
    data_path = str(s.home)
    memory = os.environ.get("VECFLOW_K8S_MEMORY", "32Gi")
    volumes = [
        k8s.V1Volume(name="dshm", empty_dir=k8s.V1EmptyDirVolumeSource(
            medium="Memory", size_limit=os.environ.get("VECFLOW_K8S_SHM", "16Gi"))),
        k8s.V1Volume(name="models", persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(
            claim_name=os.environ.get("VECFLOW_K8S_MODEL_PVC", "vecflow-models"), read_only=True)),
        k8s.V1Volume(name="data", persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(
            claim_name=os.environ.get("VECFLOW_K8S_DATA_PVC", "vecflow-data"))),
        k8s.V1Volume(name="tmp", empty_dir=k8s.V1EmptyDirVolumeSource()),
    ]
    mounts = [
        k8s.V1VolumeMount(name="dshm", mount_path="/dev/shm"),
        k8s.V1VolumeMount(name="models", mount_path=MODEL_MOUNT, read_only=True),
        k8s.V1VolumeMount(name="data", mount_path=data_path),
        k8s.V1VolumeMount(name="tmp", mount_path="/tmp"),  # the root filesystem is read-only
    ]
    return {
        "name": "vecflow-embed",  # the operator appends a random DNS-safe suffix
        "random_name_suffix": True,
        "kubernetes_conn_id": os.environ.get("VECFLOW_K8S_CONN_ID", "kubernetes_default"),
        "namespace": os.environ.get("VECFLOW_K8S_NAMESPACE", "vecflow"),
        "image": os.environ.get("VECFLOW_EMBED_IMAGE", "vecflow-embed:latest"),
        "cmds": ["python", "-m", "vecflow_model.embed"],
        "env_vars": [
            k8s.V1EnvVar(name="RUN_ID", value="{{ run_id }}"),
            k8s.V1EnvVar(name="MODEL_VERSION", value=s.model_version),
            k8s.V1EnvVar(name="SHARD_ID", value="{{ ti.map_index }}"),  # a single pod's default; mapped pods pass --shard-id
            k8s.V1EnvVar(name="ATTEMPT", value="{{ ti.try_number }}"),
        ],
        "container_resources": k8s.V1ResourceRequirements(
            requests={"nvidia.com/gpu": gpus, "cpu": os.environ.get("VECFLOW_K8S_CPU", "8"), "memory": memory},
            limits={"nvidia.com/gpu": gpus, "memory": memory},
        ),
        "node_selector": node_selector,
        "tolerations": [k8s.V1Toleration(**t) for t in tolerations],
        "volumes": volumes,
        "volume_mounts": mounts,
        "security_context": k8s.V1PodSecurityContext(run_as_non_root=True, run_as_user=10001, fs_group=10001),
        "container_security_context": k8s.V1SecurityContext(
            allow_privilege_escalation=False, read_only_root_filesystem=True,
            capabilities=k8s.V1Capabilities(drop=["ALL"])),
        "on_finish_action": "delete_succeeded_pod",
        "startup_timeout_seconds": 600,
        "schedule_timeout_seconds": 1800,
        "get_logs": True,
        # preemptible GPU nodes: retry with exponential backoff
        "retries": 4,
        "retry_delay": dt.timedelta(minutes=1),
        "retry_exponential_backoff": True,
        "max_retry_delay": dt.timedelta(minutes=30),
        "max_active_tis_per_dagrun": int(os.environ.get("VECFLOW_K8S_MAX_PODS", "16")),
        "pool": os.environ.get("VECFLOW_K8S_POOL", "default_pool"),
    }
