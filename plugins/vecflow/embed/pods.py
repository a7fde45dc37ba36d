"""The one pod factory for GPU embedding jobs: a KubernetesPodOperator per shard.

A pod reads its fetched manifest (image bytes inside) and writes its output in the staging area:
with VECFLOW_STORAGE_URL=gs://... through pyarrow's GCS filesystem and the pod's service account
(Workload Identity), no volume but the model registry; with a local storage URL (the default) from
a ReadWriteMany PVC (VECFLOW_K8S_DATA_PVC) mounted at that path, as the workers have it.

Everything a GPU node pool needs comes from the settings' `kubernetes` group (VECFLOW_K8S_*,
VECFLOW_EMBED_IMAGE; README's settings table), so DAG files stay wiring. A pod runs the same
ShardJob as the local runner (vecflow.embed.runner.shard_job), with the container's paths.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from vecflow.config import settings
from vecflow.embed.runner import shard_job

MODEL_MOUNT = Path("/models")
CONTAINER_TAXONOMY = Path("/app/taxonomy.json")


def pod_arguments(shard: dict) -> list[str]:
    """The entrypoint's arguments for one shard; the attempt comes from the pod's environment. Used
    with XComArg.map, so it runs where the shards are known, not at DAG parse time."""
    s = settings()
    return shard_job(
        shard, s, taxonomy=CONTAINER_TAXONOMY, registry=MODEL_MOUNT, device="cuda", workers=s.kubernetes.workers
    ).to_args()


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
    k = s.kubernetes
    volumes = [
        k8s.V1Volume(name="dshm", empty_dir=k8s.V1EmptyDirVolumeSource(medium="Memory", size_limit=k.shm)),
        k8s.V1Volume(
            name="models",
            persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(claim_name=k.model_pvc, read_only=True),
        ),
        k8s.V1Volume(name="tmp", empty_dir=k8s.V1EmptyDirVolumeSource()),
    ]
    mounts = [
        k8s.V1VolumeMount(name="dshm", mount_path="/dev/shm"),
        k8s.V1VolumeMount(name="models", mount_path=str(MODEL_MOUNT), read_only=True),
        k8s.V1VolumeMount(name="tmp", mount_path="/tmp"),  # the root filesystem is read-only
    ]
    if s.paths.storage_is_local:  # staging on a shared disk: the pod mounts it where the workers have it
        claim = k8s.V1PersistentVolumeClaimVolumeSource(claim_name=k.data_pvc)
        volumes.append(k8s.V1Volume(name="data", persistent_volume_claim=claim))
        mounts.append(k8s.V1VolumeMount(name="data", mount_path=s.paths.storage_root))
    return {
        "name": "vecflow-embed",  # the operator appends a random DNS-safe suffix
        "random_name_suffix": True,
        "kubernetes_conn_id": k.conn_id,
        "namespace": k.namespace,
        "image": k.image,
        "cmds": ["python", "-m", "vecflow_model.embed"],
        "env_vars": [k8s.V1EnvVar(name="ATTEMPT", value="{{ ti.try_number }}")],
        "container_resources": k8s.V1ResourceRequirements(
            requests={"nvidia.com/gpu": k.gpus, "cpu": k.cpu, "memory": k.memory},
            limits={"nvidia.com/gpu": k.gpus, "memory": k.memory},
        ),
        "node_selector": k.node_selector,
        "tolerations": [k8s.V1Toleration(**t) for t in k.tolerations],
        "volumes": volumes,
        "volume_mounts": mounts,
        "security_context": k8s.V1PodSecurityContext(run_as_non_root=True, run_as_user=10001, fs_group=10001),
        "container_security_context": k8s.V1SecurityContext(
            allow_privilege_escalation=False,
            read_only_root_filesystem=True,
            capabilities=k8s.V1Capabilities(drop=["ALL"]),
        ),
        "on_finish_action": "delete_succeeded_pod",
        "startup_timeout_seconds": 600,
        "schedule_timeout_seconds": 1800,
        "get_logs": True,
        # preemptible GPU nodes: retry with exponential backoff
        "retries": 4,
        "retry_delay": dt.timedelta(minutes=1),
        "retry_exponential_backoff": True,
        "max_retry_delay": dt.timedelta(minutes=30),
        "max_active_tis_per_dagrun": k.max_pods,
        "pool": k.pool,
    }
