"""The one pod factory: a GPU embedding pod per shard (VECFLOW_EMBED_BACKEND=kubernetes), and a
CPU index-build pod per build group (VECFLOW_INDEX_BUILD_BACKEND=kubernetes) for windows too large
for a worker, its memory sized from the group's window vectors.

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
import os
from pathlib import Path

from vecflow.config import settings
from vecflow.embed.runner import shard_job

MODEL_MOUNT = Path("/models")


def pod_arguments(shard: dict) -> list[str]:
    """The entrypoint's arguments for one shard; the attempt comes from the pod's environment. Used
    with XComArg.map, so it runs where the shards are known, not at DAG parse time."""
    s = settings()
    return shard_job(shard, s, registry=MODEL_MOUNT, device="cuda", workers=s.kubernetes.workers).to_args()


def embed_pod_operator(task_id: str = "embed_shard", **overrides):
    """One KubernetesPodOperator configured for the embedding job (e.g. to rerun a single shard)."""
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    return KubernetesPodOperator(task_id=task_id, **{**pod_kwargs(), **overrides})


def embed_pod_partial(task_id: str = "embed_shard"):
    """The mapped form: `embed_pod_partial().expand(arguments=shards.map(pod_arguments))`."""
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    return KubernetesPodOperator.partial(task_id=task_id, **pod_kwargs())


def pod_kwargs() -> dict:
    """The embedding pod: a GPU, the model registry and /dev/shm for the DataLoader workers."""
    from kubernetes.client import models as k8s

    k = settings().kubernetes
    volumes = [
        k8s.V1Volume(name="dshm", empty_dir=k8s.V1EmptyDirVolumeSource(medium="Memory", size_limit=k.shm)),
        k8s.V1Volume(
            name="models",
            persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(claim_name=k.model_pvc, read_only=True),
        ),
    ]
    mounts = [
        k8s.V1VolumeMount(name="dshm", mount_path="/dev/shm"),
        k8s.V1VolumeMount(name="models", mount_path=str(MODEL_MOUNT), read_only=True),
    ]
    return _pod_kwargs(
        name="vecflow-embed",
        image=k.image,
        cmds=["python", "-m", "vecflow_model.embed"],
        env={"ATTEMPT": "{{ ti.try_number }}"},
        resources=k8s.V1ResourceRequirements(
            requests={"nvidia.com/gpu": k.gpus, "cpu": k.cpu, "memory": k.memory},
            limits={"nvidia.com/gpu": k.gpus, "memory": k.memory},
        ),
        volumes=volumes,
        mounts=mounts,
        node_selector=k.node_selector,
        tolerations=[k8s.V1Toleration(**t) for t in k.tolerations],
        # preemptible GPU nodes: retry with exponential backoff
        retries=4,
        max_active_tis_per_dagrun=k.max_pods,
    )


# --- index builds as pods (VECFLOW_INDEX_BUILD_BACKEND=kubernetes) -----------------------------------

INDEX_POD_BASE_BYTES = 1 << 30  # the interpreter, faiss, pandas and the warehouse client
# per vector held: float32 vector in the merged window, the window's exact copy for the evaluation
# gate, the frame read from the warehouse (float64 lists) and its matrix
INDEX_POD_BYTES_PER_FLOAT = 4 + 4 + 16 + 4


def index_pod_memory(vectors: int, dim: int) -> str:
    """The memory request (and limit) of a build pod holding `vectors` vectors of `dim` floats."""
    need = INDEX_POD_BASE_BYTES + vectors * dim * INDEX_POD_BYTES_PER_FLOAT
    return f"{-(-need // (1 << 30))}Gi"


def index_pod_plan(run_date: dt.date, run_id: str, group: int, vectors: int, dim: int) -> dict:
    """What one group's build pod runs (`vecflow.cli build-indexes`) and the memory it requests for
    `vectors` vectors of `dim` floats (the serving model card's embedding_dim); plain JSON (an XCom),
    turned into pod arguments by index_pod_kwargs."""
    return {
        "arguments": ["--date", run_date.isoformat(), "--run-id", run_id, "--group", str(group)],
        "memory": index_pod_memory(vectors, dim),
        "vectors": vectors,
    }


def index_pod_kwargs(plan: dict) -> dict:
    """A planned build pod's mapped arguments (used with XComArg.map and expand_kwargs)."""
    from kubernetes.client import models as k8s

    memory = plan["memory"]
    return {
        "arguments": plan["arguments"],
        "container_resources": k8s.V1ResourceRequirements(
            requests={"cpu": settings().kubernetes.index_cpu, "memory": memory}, limits={"memory": memory}
        ),
    }


def index_pod_partial(task_id: str = "build_indexes", **overrides):
    """The mapped build pods: `index_pod_partial().expand_kwargs(plans.map(index_pod_kwargs))`. They
    run the Airflow image (VECFLOW_K8S_INDEX_IMAGE, which has vecflow) with the worker's VECFLOW_*
    settings; the warehouse's Airflow Connection must resolve in the pod too (a secrets backend)."""
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    k = settings().kubernetes
    kwargs = _pod_kwargs(
        name="vecflow-index",
        image=k.index_image,
        cmds=["python", "-m", "vecflow.cli", "build-indexes"],
        env={name: value for name, value in sorted(os.environ.items()) if name.startswith("VECFLOW_")},
        resources=None,  # per pod, from index_pod_kwargs
        volumes=[],
        mounts=[],
        node_selector=k.index_node_selector,
        tolerations=[],
        retries=2,
        max_active_tis_per_dagrun=None,
    )
    return KubernetesPodOperator.partial(task_id=task_id, **{**kwargs, **overrides})


def _pod_kwargs(
    *,
    name,
    image,
    cmds,
    env,
    resources,
    volumes,
    mounts,
    node_selector,
    tolerations,
    retries,
    max_active_tis_per_dagrun,
) -> dict:
    """What every vecflow pod shares: a writable /tmp on a read-only root, the shared-disk volume when
    the storage URL is local, non-root, no capabilities, retries with backoff, the pool."""
    from kubernetes.client import models as k8s

    s = settings()
    k = s.kubernetes
    volumes = [*volumes, k8s.V1Volume(name="tmp", empty_dir=k8s.V1EmptyDirVolumeSource())]
    mounts = [*mounts, k8s.V1VolumeMount(name="tmp", mount_path="/tmp")]  # the root filesystem is read-only
    if s.paths.storage_is_local:  # staging and indexes on a shared disk: mounted where the workers have it
        claim = k8s.V1PersistentVolumeClaimVolumeSource(claim_name=k.data_pvc)
        volumes.append(k8s.V1Volume(name="data", persistent_volume_claim=claim))
        mounts.append(k8s.V1VolumeMount(name="data", mount_path=s.paths.storage_root))
    kwargs = {
        "name": name,  # the operator appends a random DNS-safe suffix
        "random_name_suffix": True,
        "kubernetes_conn_id": k.conn_id,
        "namespace": k.namespace,
        "image": image,
        "cmds": cmds,
        "env_vars": [k8s.V1EnvVar(name=key, value=value) for key, value in env.items()],
        "node_selector": node_selector,
        "tolerations": tolerations,
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
        "retries": retries,
        "retry_delay": dt.timedelta(minutes=1),
        "retry_exponential_backoff": True,
        "max_retry_delay": dt.timedelta(minutes=30),
        "pool": k.pool,
    }
    if resources is not None:
        kwargs["container_resources"] = resources
    if max_active_tis_per_dagrun is not None:
        kwargs["max_active_tis_per_dagrun"] = max_active_tis_per_dagrun
    return kwargs
