"""embed: L2-normalised embeddings, encoder metadata, partition-independent pixels fit, quarantine."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
import torch

from curate.config import PipelineConfig, build_specs
from curate.encoders.resnet import resnet
from curate.errors import ConfigError
from curate.runner import run_pipeline
from curate.samples import samples_from_arrays
from curate.stage import StageContext
from curate.stages.embed import Embed, EmbedParams
from tests.conftest import read_run_table
from tests.stages.dedup._helpers import near_duplicate_images


def _emb(table: pa.Table) -> dict[str, np.ndarray]:
    col = table.column("embedding").combine_chunks()
    X = col.values.to_numpy().reshape(table.num_rows, col.type.list_size)
    return dict(zip(table.column("sample_id").to_pylist(), X))


def _run(tmp_path, name, images, partition_size, **embed):
    np.savez(tmp_path / "x.npz", images=images, labels=np.arange(len(images)))
    cfg = PipelineConfig(name="t", stages=[
        {"stage": "test.arrays", "path": str(tmp_path / "x.npz"), "partition_size": partition_size},
        {"stage": "embed", **embed}])
    run_pipeline(cfg, run_dir=str(tmp_path / name), scheduler="sync", progress=False)
    return read_run_table(tmp_path / name, "01_embed")


def test_pixels_embeddings_normalised_and_partition_independent(tmp_path):
    images, dup_of = near_duplicate_images(30, 10)
    a = _run(tmp_path, "a", images, 7, encoder="pixels", dim=16, fit_samples=25)
    b = _run(tmp_path, "b", images, 40, encoder="pixels", dim=16, fit_samples=25, batch_size=5)
    assert a.num_rows == b.num_rows == 40
    meta = a.schema.metadata
    assert meta[b"encoder"].decode().startswith("pixels-32px-g-pca16@")
    pre = json.loads(meta[b"preprocessing"])
    assert pre["image_size"] == 32 and pre["pca_dim"] == 16 and pre["components"] == 16
    ea, eb = _emb(a), _emb(b)
    assert ea.keys() == eb.keys()
    for k in ea:  # same fit sample and same PCA whatever the partitioning and batch size
        np.testing.assert_allclose(ea[k], eb[k], atol=1e-5)
        assert abs(np.linalg.norm(ea[k]) - 1) < 1e-5
    ids = a.column("sample_id").to_pylist()  # partitions p0000.. in order: row i is image i
    X = np.stack([ea[i] for i in ids])
    sims = X @ X.T - 2 * np.eye(len(X))
    for copy, orig in dup_of.items():  # every planted copy's nearest neighbour is its original
        assert sims[copy].argmax() == orig and sims[copy, orig] > 0.98
    assert a.schema.field("embedding").type.list_size == 16


def test_resnet18_checkpoint_through_the_stage(tmp_path):
    torch.manual_seed(0)
    ckpt = tmp_path / "r18.pt"
    torch.save(resnet("resnet18").state_dict(), ckpt)
    images, _ = near_duplicate_images(6, 2)
    t = _run(tmp_path, "r", images, 4, encoder="resnet18", weights=str(ckpt), image_size=32)
    assert t.num_rows == 8 and t.schema.field("embedding").type.list_size == 512
    assert t.schema.metadata[b"encoder"].decode().startswith("resnet18@")
    X = np.stack(list(_emb(t).values()))
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1, atol=1e-5)


def test_config_errors_before_compute(tmp_path):
    with pytest.raises(ConfigError, match="needs `weights"):
        build_specs([{"stage": "embed", "encoder": "resnet18"}])
    with pytest.raises(ConfigError, match="not found"):
        build_specs([{"stage": "embed", "encoder": "resnet50", "weights": str(tmp_path / "nope.pt")}])
    with pytest.raises(ConfigError, match="unknown encoder"):
        build_specs([{"stage": "embed", "encoder": "clip"}])
    with pytest.raises(ConfigError, match="fp16 needs device cuda"):
        build_specs([{"stage": "embed", "device": "cpu", "precision": "fp16"}])


def test_undecodable_image_is_quarantined_with_sample_id():
    images, _ = near_duplicate_images(5, 0)
    t = samples_from_arrays(list(images))
    bad = t.column("image").to_pylist()
    bad[2] = bad[2][:30]
    t = t.set_column(t.schema.get_field_index("image"), "image", pa.array(bad, pa.binary()))
    stage = Embed(EmbedParams(encoder="random_cnn", image_size=16, batch_size=2))
    stage.setup()
    ctx = StageContext(run_dir="/nonexistent", stage="01_embed", stage_key="embed", partition_id="p",
                       seed=0, on_error="quarantine")
    out = stage.process(t, ctx)
    assert out.num_rows == 4
    assert t.column("sample_id")[2].as_py() not in out.column("sample_id").to_pylist()
    assert [q["sample_id"] for q in ctx.quarantined] == [t.column("sample_id")[2].as_py()]
    assert ctx.quarantined[0]["reason"] == "decode_error"
    # batching does not change the result
    stage2 = Embed(EmbedParams(encoder="random_cnn", image_size=16, batch_size=64))
    stage2.setup()
    out2 = stage2.process(t, StageContext(run_dir="/x", stage="01_embed", stage_key="embed", partition_id="p",
                                          seed=0, on_error="quarantine"))
    e1, e2 = _emb(out), _emb(out2)
    for k in e1:
        np.testing.assert_allclose(e1[k], e2[k], atol=1e-5)


def test_pixels_fit_is_cached_and_reused(tmp_path):
    images, _ = near_duplicate_images(12, 0)
    a = _run(tmp_path, "c", images, 5, encoder="pixels", dim=8)
    fit_dir = tmp_path / "c" / "01_embed" / "_fit"
    assert len(list(fit_dir.glob("pixels-*.npz"))) == 1
    # a fresh stage instance (another worker) loads the cached PCA: same id and preprocessing metadata
    from curate.stage import Upstream

    stage = Embed(EmbedParams(encoder="pixels", dim=8))
    stage.setup()
    ctx = StageContext(run_dir=str(tmp_path / "c"), stage="01_embed", stage_key="embed", partition_id=None, seed=0,
                       on_error="raise", upstream=(Upstream("00_test_arrays", ("samples",)),))
    enc = stage._fit(ctx)
    stage.encoder = enc
    assert not ctx.counters  # loaded, not refitted
    assert stage.output_schemas()["embeddings"].metadata == a.schema.metadata


def test_auto_is_the_default_and_resolves_to_gradpix_without_weights(tmp_path):
    images, dup_of = near_duplicate_images(30, 10)
    a = _run(tmp_path, "auto", images, 7, fit_samples=25)
    b = _run(tmp_path, "auto2", images, 40, fit_samples=25, batch_size=3)
    meta = a.schema.metadata
    assert meta[b"encoder_spec"] == b"auto" and meta[b"auto_resolved"].decode() == "gradpix-32px-g-pca128"
    assert meta[b"encoder"].decode().startswith("gradpix-32px-g-pca128@")
    pre = json.loads(meta[b"preprocessing"])
    assert pre["features"] == "gradpix" and pre["components"] == 24 and pre["fit_samples"] == 25
    assert a.schema.field("embedding").type.list_size == 128
    ea, eb = _emb(a), _emb(b)
    ids = a.column("sample_id").to_pylist()
    for k in ea:  # deterministic whatever the partitioning and batch size
        np.testing.assert_allclose(ea[k], eb[k], atol=1e-5)
    X = np.stack([ea[i] for i in ids])
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)
    sims = X @ X.T - 2 * np.eye(len(X))
    for copy, orig in dup_of.items():
        assert sims[copy].argmax() == orig
    assert len(list((tmp_path / "auto" / "01_embed" / "_fit").glob("gradpix-*.npz"))) == 1


def test_auto_uses_the_named_checkpoint(tmp_path):
    torch.manual_seed(0)
    ckpt = tmp_path / "r18.pt"
    torch.save(resnet("resnet18").state_dict(), ckpt)
    images, _ = near_duplicate_images(6, 0)
    t = _run(tmp_path, "ck", images, 6, weights=str(ckpt), image_size=32)
    meta = t.schema.metadata
    assert meta[b"encoder"].decode().startswith("resnet18@") and meta[b"auto_resolved"] == b"resnet18"
    assert t.schema.field("embedding").type.list_size == 512
    with pytest.raises(Exception, match="not found"):
        EmbedParams(weights=str(tmp_path / "missing.pt"))
