"""Embedding stage: shipped model, entrypoint contract, pod spec, sharding, retried shards."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sys

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from vecflow.config import settings
from vecflow.embed.plan import shard_size
from vecflow_model.embed import main as entrypoint
from vecflow_model.registry import DEFAULT_REGISTRY, ModelRegistryError, file_md5, load_model, read_card

MODEL = "garment-arcface-v1"


@pytest.fixture(scope="module")
def model():
    return load_model(MODEL)


def test_shipped_weights_match_the_card(model):
    card = json.loads((DEFAULT_REGISTRY / MODEL / "card.json").read_text())
    assert file_md5(DEFAULT_REGISTRY / MODEL / card["weights_file"]) == card["weights_md5"]
    assert model.embedding_dim == 256 and model.categories[0] == "tshirt_top"


def test_recall_at_1_on_held_out_test_images(model):
    """1,000 Fashion-MNIST test images as queries against 10,000 train images as the gallery."""
    import torch

    from vecflow.demo.catalog import fashion_mnist

    train, train_labels = fashion_mnist.load("train")
    test, test_labels = fashion_mnist.load("test")

    def embed(images):
        x = torch.from_numpy(images).float()[:, None] / 255.0
        x = (x / torch.quantile(x.flatten(1), 0.995, dim=1).clamp_min(1e-6)[:, None, None, None]).clamp(0, 1)
        with torch.inference_mode():
            return torch.cat([model.network(x[i : i + 1000])[0] for i in range(0, len(x), 1000)])

    queries, gallery = embed(test[:1000]), embed(train[:10000])
    nearest = (queries @ gallery.t()).argmax(dim=1).numpy()
    recall = float((train_labels[:10000][nearest] == test_labels[:1000]).mean())
    print(f"recall@1 = {recall:.4f}")
    assert recall >= 0.85


def test_registry_refuses_wrong_md5_and_unknown_models(tmp_path):
    shutil.copytree(DEFAULT_REGISTRY / MODEL, tmp_path / MODEL)
    with open(tmp_path / MODEL / "model.pt", "ab") as fh:
        fh.write(b"tampered")
    with pytest.raises(ModelRegistryError, match="md5"):
        read_card(MODEL, tmp_path)
    with pytest.raises(ModelRegistryError, match="not in registry"):
        read_card("no-such-model", tmp_path)
    (tmp_path / MODEL / "model.pt").unlink()
    with pytest.raises(ModelRegistryError, match="missing"):
        read_card(MODEL, tmp_path)


def _tiny_shard(tmp_path):
    """Six catalog images: four good ones (two of them the same bytes), one corrupt, one missing."""
    from vecflow.demo.catalog import fashion_mnist
    from vecflow.demo.catalog.render import jpeg_bytes, pattern_modulation, render
    from vecflow.taxonomy import load_taxonomy

    taxonomy = load_taxonomy()
    images, labels = fashion_mnist.load("test")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(4):
        data = jpeg_bytes(render(images[i], (200, 30, 35), pattern_modulation("stripes", 8, 256), rng), 90)
        (tmp_path / f"img{i}.jpg").write_bytes(data)
        rows.append(
            {"image_id": f"img{i}", "uri": f"img{i}.jpg", "category": taxonomy.category_by_label()[int(labels[i])]}
        )
    (tmp_path / "dup copy.jpg").write_bytes((tmp_path / "img0.jpg").read_bytes())
    (tmp_path / "bad.jpg").write_bytes((tmp_path / "img1.jpg").read_bytes()[:500])
    rows += [
        # a file:// URI, percent-encoded as Path.as_uri() writes it
        {"image_id": "zdup", "uri": (tmp_path / "dup copy.jpg").as_uri(), "category": rows[0]["category"]},
        {"image_id": "bad", "uri": "bad.jpg", "category": "trouser"},
        {"image_id": "gone", "uri": "gone.jpg", "category": "trouser"},
    ]
    manifest = pd.DataFrame(rows).assign(source="shop_a", listed_date=dt.date(2026, 1, 1))
    manifest.to_parquet(tmp_path / "shard.parquet", index=False)
    return tmp_path / "shard.parquet"


def _tags(out: pd.DataFrame) -> pd.DataFrame:
    """The shipped taxonomy's tags of a shard output's rows (dimension -> tag columns, one per image)."""
    from vecflow.tagging import tag_frame
    from vecflow.taxonomy import load_taxonomy

    frame = out.reset_index()
    tags = tag_frame(frame, load_taxonomy()).tags
    single = tags.drop_duplicates(["row", "dimension"]).pivot(index="row", columns="dimension", values="tag")
    return single.set_axis(out.index[single.index])


def _run(tmp_path, manifest, output, attempt=1, extra=()):
    return entrypoint(
        [
            "--manifest",
            str(manifest),
            "--catalog-root",
            str(tmp_path),
            "--output",
            str(output),
            "--model-version",
            MODEL,
            "--run-id",
            "r1",
            "--shard-id",
            "0",
            "--attempt",
            str(attempt),
            "--batch-size",
            "2",
            *extra,
        ]
    )


def test_entrypoint_writes_vectors_and_reject_rows(tmp_path):
    manifest = _tiny_shard(tmp_path)
    remote = {"image_id": "remote", "uri": "https://cdn.invalid/x.jpg", "category": "coat", "source": "shop_a"}
    shard = pd.concat([pd.read_parquet(manifest), pd.DataFrame([{**remote, "listed_date": dt.date(2026, 1, 1)}])])
    shard.to_parquet(manifest, index=False)
    assert _run(tmp_path, manifest, tmp_path / "out.parquet") == 0
    out = pq.read_table(tmp_path / "out.parquet").to_pandas().set_index("image_id")
    assert out.loc["bad", "reject_reason"] == "corrupt" and out.loc["gone", "reject_reason"] == "missing"
    # the job reads no network: a remote URI is a reject naming it
    assert (
        out.loc["remote", "reject_reason"] == "unsupported_uri"
        and "https://cdn.invalid" in out.loc["remote", "reject_detail"]
    )
    good = out[out["reject_reason"].isna()]
    assert sorted(good.index) == ["img0", "img1", "img2", "img3", "zdup"]
    vectors = np.stack(good["embedding"].to_numpy())
    assert vectors.shape == (5, 256)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.allclose(vectors[list(good.index).index("zdup")], vectors[list(good.index).index("img0")])
    assert good.loc["zdup", "content_md5"] == good.loc["img0", "content_md5"]
    # the job measures; the taxonomy's tags come from its analyses (vecflow.tagging)
    tags = _tags(good)
    assert set(tags["color"]) == {"red"} and set(tags["pattern"]) == {"striped"}
    model = [json.loads(a)["model"]["category"] for a in good["analyses"]]
    assert (pd.Series(model, index=good.index) == good["catalog_category"]).mean() >= 0.8
    assert set(out["run_id"]) == {"r1"} and set(out["attempt"]) == {1}
    assert not list(tmp_path.glob(".out.parquet.*.tmp"))


def test_a_photo_stored_sideways_gets_the_category_it_has_upright(tmp_path):
    """A phone photo: 4x the analysis size, stored rotated with an EXIF orientation tag, and a copy
    with a non-sRGB ICC profile; both analysed as the upright sRGB photo is (the decode is DCT-scaled)."""
    import io

    from PIL import Image, ImageCms

    from vecflow.demo.catalog import fashion_mnist
    from vecflow.demo.catalog.render import render

    images, labels = fashion_mnist.load("test")
    trouser = int(np.flatnonzero(labels == 1)[0])  # long and narrow: lying on its side it is no trouser
    picture = render(images[trouser], (40, 60, 160), np.ones((256, 256), np.float32), np.random.default_rng(3))
    upright = picture.resize((1024, 1024), Image.BICUBIC)
    upright.save(tmp_path / "upright.jpg", quality=92)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    upright.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "sideways.jpg", quality=92, exif=exif)
    wide = ImageCms.createProfile("LAB")  # a profile whose pixels are not sRGB numbers
    lab = ImageCms.profileToProfile(upright, ImageCms.createProfile("sRGB"), wide, outputMode="LAB")
    buffer = io.BytesIO()
    lab.save(buffer, format="TIFF", icc_profile=ImageCms.ImageCmsProfile(wide).tobytes())
    (tmp_path / "profiled.tif").write_bytes(buffer.getvalue())
    rows = [
        {"image_id": name, "uri": f"{name}.{ext}", "category": None}
        for name, ext in [("upright", "jpg"), ("sideways", "jpg"), ("profiled", "tif")]
    ]
    pd.DataFrame(rows).assign(source="shop_a", listed_date=dt.date(2026, 1, 1)).to_parquet(tmp_path / "s.parquet")
    assert _run(tmp_path, tmp_path / "s.parquet", tmp_path / "out.parquet") == 0
    out = pq.read_table(tmp_path / "out.parquet").to_pandas().set_index("image_id")
    assert out["reject_reason"].isna().all(), out["reject_detail"].to_dict()
    model = {i: json.loads(a)["model"]["category"] for i, a in out["analyses"].items()}
    assert model == {"upright": "trouser", "sideways": "trouser", "profiled": "trouser"}
    vectors = {i: np.asarray(v) for i, v in out["embedding"].items()}
    assert float(vectors["upright"] @ vectors["sideways"]) > 0.99
    assert set(_tags(out)["color"]) == {"blue"}
    hue = {i: json.loads(a)["colour"]["hue"] for i, a in out["analyses"].items()}
    assert abs(hue["profiled"] - hue["upright"]) < 0.02 and abs(hue["sideways"] - hue["upright"]) < 0.02


class _OwnBackbone(torch.nn.Module):
    """Stands for a deployment's own backbone (a torchvision model without its classifier, say)."""

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, stride=2),
            torch.nn.ReLU(),
            torch.nn.Conv2d(16, 64, 3, stride=2),
            torch.nn.AdaptiveAvgPool2d(1),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images).flatten(1)


@pytest.mark.integration  # exports and loads a real backbone
def test_an_exported_backbone_from_the_registry_embeds_rgb(tmp_path):
    registry = tmp_path / "registry" / "own-backbone-v1"
    registry.mkdir(parents=True)
    torch.manual_seed(0)
    program = torch.export.export(
        _OwnBackbone().eval(), (torch.randn(2, 3, 96, 96),), dynamic_shapes={"images": {0: torch.export.Dim("batch")}}
    )
    torch.export.save(program, registry / "model.pt2")
    (registry / "card.json").write_text(
        json.dumps(
            {
                "kind": "torch-export",
                "weights_file": "model.pt2",
                "weights_md5": file_md5(registry / "model.pt2"),
                "embedding_dim": 64,
                "input_size": 96,
            }
        )
    )
    manifest = _tiny_shard(tmp_path)
    args = [
        "--manifest",
        str(manifest),
        "--catalog-root",
        str(tmp_path),
        "--output",
        str(tmp_path / "out.parquet"),
        "--model-version",
        "own-backbone-v1",
        "--registry",
        str(tmp_path / "registry"),
        "--run-id",
        "r1",
        "--shard-id",
        "0",
        "--batch-size",
        "2",
    ]
    assert entrypoint(args) == 0
    good = pq.read_table(tmp_path / "out.parquet").to_pandas().query("reject_reason.isna()")
    vectors = np.stack(good["embedding"].to_numpy())
    assert vectors.shape == (5, 64) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # no category head: no model class among the analyses (the catalog's category is the tag)
    assert all("model" not in json.loads(a) for a in good["analyses"])
    assert (_tags(good)["category"] == good["catalog_category"]).all()
    # a weights file that is not an exported program is a clear registry error, and a non-zero exit
    torch.save(_OwnBackbone().state_dict(), registry / "model.pt2")
    card = json.loads((registry / "card.json").read_text())
    (registry / "card.json").write_text(json.dumps({**card, "weights_md5": file_md5(registry / "model.pt2")}))
    with pytest.raises(ModelRegistryError, match="not a torch.export program"):
        load_model("own-backbone-v1", tmp_path / "registry")
    assert entrypoint(args) != 0


def test_entrypoint_fails_only_on_fatal_errors(tmp_path):
    manifest = _tiny_shard(tmp_path)
    assert _run(tmp_path, manifest, tmp_path / "out.parquet", extra=["--model-version", "nope"]) == 2
    assert _run(tmp_path, tmp_path / "no-manifest.parquet", tmp_path / "out.parquet") == 2
    assert not (tmp_path / "out.parquet").exists()


def test_shard_size_keeps_the_fan_out_under_max_map_length():
    assert shard_size(250_000, 100_000, 1024) == 100_000
    assert shard_size(10_000_000, 5_000, 1024) == 9766  # 1024 shards of <= 9766 images
    assert -(-10_000_000 // shard_size(10_000_000, 5_000, 1024)) <= 1024
    assert shard_size(0, 5_000, 1024) == 5_000


def test_retried_shard_leaves_no_duplicates_downstream(tmp_path, warehouse):
    from vecflow.clean import clean_partition
    from vecflow.config import settings
    from vecflow.embed.load import load_shards
    from vecflow.embed.staging import staging
    from vecflow.tagging import category_resolver

    manifest = _tiny_shard(tmp_path)
    output = tmp_path / "out.parquet"
    day = dt.date(2026, 1, 1)
    shard = {"shard_id": 0, "output": str(output)}
    categorise = category_resolver(settings(), warehouse, MODEL)
    _run(tmp_path, manifest, output, attempt=1)
    load_shards(staging(settings()), warehouse, day, "r1", [shard], categorise)
    load_shards(staging(settings()), warehouse, day, "r1", [shard], categorise)  # the load task retried
    _run(tmp_path, manifest, output, attempt=2)  # the shard retried after a failure downstream
    load_shards(staging(settings()), warehouse, day, "r1", [shard], categorise)
    assert len(warehouse.table("vector_log")) == 10  # two attempts of five vectors, each loaded once
    clean_partition(settings(), warehouse, day, "r1")
    clean = warehouse.table("vectors_clean")
    assert sorted(clean["image_id"]) == [
        "img0",
        "img1",
        "img2",
        "img3",
    ]  # zdup -> img0 by md5 (the smaller image_id is canonical)
    assert len(warehouse.table("rejects").query("stage == 'embed'")) == 2


def test_pod_spec_rendered_by_the_provider(monkeypatch):
    from vecflow.embed.pods import MODEL_MOUNT, embed_pod_operator, pod_arguments
    from vecflow.embed.runner import shard_job
    from vecflow_model.embed import parse_args

    monkeypatch.setenv("VECFLOW_EMBED_IMAGE", "registry.example/vecflow-embed:1.0")
    monkeypatch.setenv(
        "VECFLOW_K8S_TOLERATIONS", '[{"key": "gpu", "operator": "Equal", "value": "h100", "effect": "NoSchedule"}]'
    )
    shard = {
        "manifest": "/data/staging/s.parquet",
        "output": "/data/staging/s.vectors.parquet",
        "shard_id": 3,
        "run_id": "scheduled__2026-01-02",
        "model_version": "garment-arcface-v1",
    }
    op = embed_pod_operator(arguments=pod_arguments(shard))
    pod = op.build_pod_request_obj(context=None, dry_run=True)
    container = pod.spec.containers[0]
    assert container.image == "registry.example/vecflow-embed:1.0"
    assert container.command == ["python", "-m", "vecflow_model.embed"]
    args = container.args
    assert args[args.index("--manifest") + 1] == shard["manifest"] and args[args.index("--device") + 1] == "cuda"
    assert container.resources.requests["nvidia.com/gpu"] == container.resources.limits["nvidia.com/gpu"] == "1"
    assert pod.spec.node_selector == {"nvidia.com/gpu.present": "true"}
    assert [(t.key, t.value, t.effect) for t in pod.spec.tolerations] == [("gpu", "h100", "NoSchedule")]
    volumes = {v.name: v for v in pod.spec.volumes}
    assert volumes["dshm"].empty_dir.medium == "Memory"
    assert volumes["models"].persistent_volume_claim.read_only is True
    mounts = {m.name: m for m in container.volume_mounts}
    assert mounts["dshm"].mount_path == "/dev/shm" and mounts["models"].read_only is True
    assert mounts["data"].mount_path == settings().paths.storage_root
    env = {e.name: e.value for e in container.env}
    # the job is in the arguments (vecflow_model.contract.ShardJob); only the try number comes from the pod's env
    assert env == {"ATTEMPT": "{{ ti.try_number }}"}
    assert parse_args(args) == shard_job(shard, settings(), registry=MODEL_MOUNT, device="cuda", workers=8, attempt=1)
    assert pod.spec.security_context.run_as_non_root is True
    assert container.security_context.read_only_root_filesystem is True
    assert op.retries >= 2 and op.retry_exponential_backoff
    assert op.on_finish_action.value == "delete_succeeded_pod"
    assert pod.metadata.name.startswith("vecflow-embed") and len(pod.metadata.name) <= 63


def test_a_pod_with_staging_in_a_bucket_mounts_no_data_volume(monkeypatch):
    from vecflow.embed.pods import embed_pod_operator, pod_arguments

    monkeypatch.setenv("VECFLOW_STORAGE_URL", "gs://vecflow-prod/daily")
    shard = {
        "manifest": "gs://vecflow-prod/daily/staging/2026-01-02/r/shard-0003.fetched.parquet",
        "output": "gs://vecflow-prod/daily/staging/2026-01-02/r/shard-0003.vectors.parquet",
        "shard_id": 3,
        "run_id": "scheduled__2026-01-02",
        "model_version": "garment-arcface-v1",
    }
    pod = embed_pod_operator(arguments=pod_arguments(shard)).build_pod_request_obj(context=None, dry_run=True)
    args = pod.spec.containers[0].args
    # the URLs pass whole (a Path would fold gs:// into gs:/)
    assert (
        args[args.index("--manifest") + 1] == shard["manifest"] and args[args.index("--output") + 1] == shard["output"]
    )
    assert sorted(v.name for v in pod.spec.volumes) == ["dshm", "models", "tmp"]
    assert "data" not in {m.name for m in pod.spec.containers[0].volume_mounts}


def test_kubernetes_backend_maps_pods_over_shards(monkeypatch):
    import subprocess

    probe = (
        "from airflow.dag_processing.dagbag import DagBag; import sys; "
        "bag = DagBag(dag_folder=sys.argv[1]); assert not bag.import_errors, bag.import_errors; "
        "dag = bag.dags['vecflow_daily']; t = dag.get_task('embed.embed_shard'); "
        "print(type(t).__name__, t.operator_name, sorted(t.upstream_task_ids)); "
        "f = dag.get_task('embed.fetch_shard'); print(type(f).__name__, f.operator_name, sorted(f.upstream_task_ids))"
    )
    from vecflow.resources import PROJECT_DIR

    env = {**__import__("os").environ, "VECFLOW_EMBED_BACKEND": "kubernetes"}
    done = subprocess.run(
        [sys.executable, "-c", probe, str(PROJECT_DIR / "dags")], env=env, capture_output=True, text=True, check=True
    )
    # the GPU pods get the shards the CPU fetch task downloaded (the pods read no network)
    pods, fetch = done.stdout.strip().splitlines()[-2:]
    assert pods == "MappedOperator KubernetesPodOperator ['embed.fetch_shard']"
    assert fetch == "DecoratedMappedOperator @task ['embed.plan_shards']"


def test_dataloader_workers_give_the_same_rows(tmp_path):
    manifest = _tiny_shard(tmp_path)
    assert _run(tmp_path, manifest, tmp_path / "serial.parquet") == 0
    assert _run(tmp_path, manifest, tmp_path / "workers.parquet", extra=["--workers", "2"]) == 0
    columns = ["image_id", "content_md5", "dhash", "analyses", "reject_reason"]
    serial = pq.read_table(tmp_path / "serial.parquet").to_pandas().sort_values("image_id").reset_index(drop=True)
    workers = pq.read_table(tmp_path / "workers.parquet").to_pandas().sort_values("image_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(serial[columns], workers[columns])
    for a, b in zip(serial["embedding"], workers["embedding"]):
        assert (a is None and b is None) or np.allclose(a, b, atol=1e-6)


def test_index_build_pods_are_sized_from_their_windows(monkeypatch):
    """VECFLOW_INDEX_BUILD_BACKEND=kubernetes: a build pod per group from the one pod factory, running
    `vecflow.cli build-indexes` for its group, its memory request growing with its window's vectors;
    rendered by the provider as the cluster would get it."""
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    from vecflow.embed.pods import index_pod_kwargs, index_pod_memory, index_pod_partial, index_pod_plan

    monkeypatch.setenv("VECFLOW_STORAGE_URL", "gs://vecflow-prod/daily")
    monkeypatch.setenv("VECFLOW_K8S_INDEX_IMAGE", "registry.example/vecflow-airflow:1.0")
    assert index_pod_memory(0, 256) == "1Gi"
    assert index_pod_memory(10_000_000, 256) == "68Gi"  # 28 bytes per float held (66.8 GiB), and 1 GiB
    small, large = (index_pod_plan(dt.date(2026, 3, 2), "scheduled__x", 1, n, 256) for n in (1000, 10**7))
    # a brought model's vectors (its card's embedding_dim) size the pod: 384-d needs half as much again
    assert index_pod_plan(dt.date(2026, 3, 2), "scheduled__x", 1, 10**7, 384)["memory"] == "102Gi"
    assert small["arguments"] == ["--date", "2026-03-02", "--run-id", "scheduled__x", "--group", "1"]
    op = index_pod_partial()
    for plan, memory in ((small, "2Gi"), (large, "68Gi")):
        kwargs = {**op.kwargs, **index_pod_kwargs(plan)}
        kwargs.pop("task_id", None)
        pod = KubernetesPodOperator(task_id="build_indexes", **kwargs).build_pod_request_obj(context=None, dry_run=True)
        container = pod.spec.containers[0]
        assert container.image == "registry.example/vecflow-airflow:1.0"
        assert container.command == ["python", "-m", "vecflow.cli", "build-indexes"]
        assert container.args == plan["arguments"]
        assert container.resources.requests["memory"] == container.resources.limits["memory"] == memory
        assert "nvidia.com/gpu" not in container.resources.requests
        env = {e.name: e.value for e in container.env}
        assert env["VECFLOW_STORAGE_URL"] == "gs://vecflow-prod/daily"  # the worker's settings reach the pod
        assert sorted(v.name for v in pod.spec.volumes) == ["tmp"]
        assert pod.spec.security_context.run_as_non_root and container.security_context.read_only_root_filesystem


def test_kubernetes_index_backend_maps_build_pods_over_the_groups():
    import subprocess

    probe = (
        "from airflow.dag_processing.dagbag import DagBag; import sys; "
        "bag = DagBag(dag_folder=sys.argv[1]); assert not bag.import_errors, bag.import_errors; "
        "dag = bag.dags['vecflow_daily']; t = dag.get_task('build_indexes'); "
        "print(type(t).__name__, t.operator_name, sorted(t.upstream_task_ids), sorted(t.downstream_task_ids))"
    )
    from vecflow.resources import PROJECT_DIR

    env = {**__import__("os").environ, "VECFLOW_INDEX_BUILD_BACKEND": "kubernetes", "VECFLOW_INDEX_BUILD_GROUPS": "3"}
    done = subprocess.run(
        [sys.executable, "-c", probe, str(PROJECT_DIR / "dags")], env=env, capture_output=True, text=True, check=True
    )
    pods = done.stdout.strip().splitlines()[-1]
    assert pods == "MappedOperator KubernetesPodOperator ['plan_index_pods'] ['check_quality']"
