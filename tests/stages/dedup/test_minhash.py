"""dedup.minhash: near-identical texts across partitions are grouped; others and empty texts kept."""

import numpy as np
import pytest
from datasketch import MinHash

from curate.config import PipelineConfig
from curate.errors import ConfigError
from curate.ops import minhash as M
from curate.runner import run_pipeline
from tests.conftest import read_run_table
from tests.stages.dedup._hash_fixture import rows_for, smooth_field, write_partitions

REPORT = ("CT chest with contrast. A 4 mm solid nodule in the right upper lobe, unchanged since the "
          "prior study. No pleural effusion. Heart size is normal. No mediastinal lymphadenopathy.")
TEXTS_A = [
    REPORT,
    "MRI brain without contrast: no acute infarct, ventricles normal in size, no mass effect.",
    None,
    "Chest radiograph: clear lungs, no pneumothorax.",
]
TEXTS_B = [
    REPORT.upper().replace(",", " ,").replace("4 mm", "4  mm"),  # case / spacing / punctuation only
    REPORT.replace("unchanged", "stable"),  # one word changed
    "",
    "Abdominal ultrasound: normal liver echotexture, no gallstones, no biliary dilatation.",
]


def run(tmp_path, **params):
    imgs = [smooth_field(s) for s in range(8)]
    p0 = rows_for(imgs[:4], uri="memory://a", text=TEXTS_A)
    p1 = rows_for(imgs[4:], uri="memory://b", text=TEXTS_B)
    path = write_partitions(str(tmp_path / "parts"), {"p0": p0, "p1": p1})
    cfg = PipelineConfig(name="t", stages=[{"stage": "test.tables", "path": path},
                                           {"stage": "dedup.minhash", **params}])
    run_pipeline(cfg, run_dir=str(tmp_path / "run"), scheduler="sync", progress=False)
    dec = {r["sample_id"]: r for r in read_run_table(tmp_path / "run", "01_dedup_minhash").to_pylist()}
    hashes = {r["sample_id"]: r for r in read_run_table(tmp_path / "run", "01_dedup_minhash", "hashes").to_pylist()}
    return p0 + p1, dec, hashes


def test_near_identical_texts_grouped(tmp_path):
    rows, dec, hashes = run(tmp_path)
    ids = [r["sample_id"] for r in rows]
    for k in (4, 5):
        d = dec[ids[k]]
        assert not d["keep"] and d["representative_id"] == ids[0] and d["score"] >= 0.8, d
        assert d["reason"].startswith("minhash jaccard~")
    assert dec[ids[0]]["keep"] and dec[ids[0]]["cluster_id"] == f"minhash:{ids[0]}"
    for k in (1, 3, 7):
        assert dec[ids[k]]["keep"] and dec[ids[k]]["reason"] == "unique"
    for k in (2, 6):  # null and empty text
        assert dec[ids[k]]["keep"] and dec[ids[k]]["reason"] == "no_text" and hashes[ids[k]]["minhash"] is None
    # the stored signature is datasketch's
    ref = MinHash(num_perm=128, seed=1)
    ref.update_batch(M.shingles(REPORT))
    assert hashes[ids[0]]["minhash"] == ref.hashvalues.astype(np.uint64).tolist()


def test_word_shingles_and_explicit_bands(tmp_path):
    rows, dec, _ = run(tmp_path, shingle="word", ngram=3, bands=16, rows=8, threshold=0.7, splits=3)
    ids = [r["sample_id"] for r in rows]
    assert not dec[ids[4]]["keep"]  # identical after normalisation
    assert all(dec[ids[k]]["keep"] for k in (1, 3, 7))


def test_bad_band_config_is_a_config_error():
    with pytest.raises(ConfigError, match="bands"):
        PipelineConfig(name="t", stages=[{"stage": "dedup.minhash", "bands": 20}]).specs()
    with pytest.raises(ConfigError, match="exceeds num_perm"):
        PipelineConfig(name="t", stages=[{"stage": "dedup.minhash", "bands": 20, "rows": 10}]).specs()


def test_hashes_table_carries_phash_from_an_earlier_stage(tmp_path):
    imgs = [smooth_field(s) for s in range(3)]
    rows = rows_for(imgs, text=["a b c d e f", "a b c d e f", None])
    path = write_partitions(str(tmp_path / "parts"), {"p0": rows})
    cfg = PipelineConfig(name="t", stages=[{"stage": "test.tables", "path": path}, {"stage": "dedup.phash"},
                                           {"stage": "dedup.minhash"}])
    run_pipeline(cfg, run_dir=str(tmp_path / "run"), scheduler="sync", progress=False)
    ph = {r["sample_id"]: r for r in read_run_table(tmp_path / "run", "01_dedup_phash", "hashes").to_pylist()}
    mh_ = {r["sample_id"]: r for r in read_run_table(tmp_path / "run", "02_dedup_minhash", "hashes").to_pylist()}
    for sid, r in mh_.items():
        assert r["phash"] == ph[sid]["phash"] is not None and r["dhash"] == ph[sid]["dhash"]
    assert mh_[rows[0]["sample_id"]]["minhash"] == mh_[rows[1]["sample_id"]]["minhash"] is not None
    assert mh_[rows[2]["sample_id"]]["minhash"] is None
