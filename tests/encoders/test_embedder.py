"""Embedder: the run's embed record is what later stages load (encoder id, fitted PCA, vectors)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from curate import imaging
from curate.encoders.embedder import FIT_DIR, RECORD, Embedder
from curate.errors import ConfigError
from curate.stage import StageContext, Upstream
from curate.stages.embed import EmbedParams
from tests.stages.dedup._helpers import near_duplicate_images
from tests.stages.test_embed import _emb, _run


def _ctx(run_dir) -> StageContext:
    return StageContext(run_dir=str(run_dir), stage="02_later", stage_key="later", partition_id=None, seed=0,
                        on_error="raise", upstream=(Upstream("00_test_arrays", ("samples",)),
                                                    Upstream("01_embed", ("embeddings",))))


@pytest.mark.parametrize("encoder", ["gradpix", "random_cnn"])
def test_from_run_reproduces_the_embeddings_table(tmp_path, encoder):
    images, _ = near_duplicate_images(10, 2)
    table = _run(tmp_path, "r", images, 5, encoder=encoder, fit_samples=8, batch_size=3)
    rec = json.loads((tmp_path / "r" / "01_embed" / FIT_DIR / RECORD).read_text())
    assert rec["encoder_id"] == table.schema.metadata[b"encoder"].decode()
    assert (rec["state_file"] is not None) == (encoder == "gradpix")
    emb = Embedder.from_run(_ctx(tmp_path / "r"))
    assert emb.id == rec["encoder_id"] and emb.keys == rec["keys"]
    ref = _emb(table)
    ids = table.column("sample_id").to_pylist()
    png = [imaging.encode_png(a) for a in images]
    got = np.concatenate([emb(png[p0:p0 + 5]) for p0 in range(0, len(png), 5)])  # embed's partitions, batches
    assert np.array_equal(got, np.stack([ref[i] for i in ids]))  # partitions in order: row i is image i


def test_from_run_without_an_embed_stage_and_a_tampered_state(tmp_path):
    empty = StageContext(run_dir=str(tmp_path), stage="01_x", stage_key="x", partition_id=None, seed=0,
                         on_error="raise")
    assert Embedder.from_run(empty) is None
    fallback = Embedder.for_stage(empty, EmbedParams(encoder="pixels", dim=4), [imaging.encode_png(a) for a in
                                                                               near_duplicate_images(8, 0)[0]], 1)
    assert fallback.id.startswith("pixels-32px-g-pca4@")
    images, _ = near_duplicate_images(12, 0)
    _run(tmp_path, "r", images, 6, encoder="pixels", dim=8)
    path = tmp_path / "r" / "01_embed" / FIT_DIR / RECORD
    rec = json.loads(path.read_text())
    rec["encoder_id"] = rec["encoder_id"].split("@")[0] + "@000000000000"
    path.write_text(json.dumps(rec))
    with pytest.raises(ConfigError, match="rerun embed"):
        Embedder.from_run(_ctx(tmp_path / "r"))


def test_record_follows_a_rerun_with_other_keys(tmp_path):
    images, _ = near_duplicate_images(12, 0)
    _run(tmp_path, "r", images, 6, encoder="pixels", dim=8)
    b = _run(tmp_path, "r", images, 6, encoder="pixels", dim=4)  # same run dir, embed reruns
    emb = Embedder.from_run(_ctx(tmp_path / "r"))
    assert emb.id == b.schema.metadata[b"encoder"].decode() and emb.encoder.dim == 4


def test_a_second_run_with_the_same_config_gets_its_own_fit_and_record(tmp_path):
    images, _ = near_duplicate_images(12, 0)
    a = _run(tmp_path, "a", images, 6, encoder="pixels", dim=8)
    b = _run(tmp_path, "b", images, 6, encoder="pixels", dim=8)  # same config: the stage instance is reused
    assert list((tmp_path / "b" / "01_embed" / FIT_DIR).glob("pixels-*.npz"))
    emb = Embedder.from_run(_ctx(tmp_path / "b"))
    assert emb.id == b.schema.metadata[b"encoder"].decode() == a.schema.metadata[b"encoder"].decode()
