import numpy as np
import pyarrow.compute as pc
import pytest

import tests.stages.mine._fixture  # noqa: F401 - registers test.planted
from curate.config import PipelineConfig
from curate.runner import run_pipeline
from tests.conftest import read_run_table
from tests.stages.mine._fixture import decision, make_partitions, unit

D = 32
NAMES = ["A", "B", "C", "D", "E", "F", "G", "R"]


def planted(tmp_path, n_fill=32):
    """A = e0; its nearest neighbours are planted false negatives of each kind, then true negatives F, G."""
    cos = {"B": 0.90, "C": 0.88, "D": 0.86, "E": 0.97, "F": 0.80, "G": 0.70, "R": 0.99}
    vecs = [unit(D, 0, 1.0, 1)] + [unit(D, 0, cos[k], 1 + i) for i, k in enumerate(NAMES[1:])]
    rng = np.random.default_rng(0)
    fill = rng.normal(size=(n_fill, D)).astype(np.float32)
    fill[:, :8] = 0
    fill /= np.linalg.norm(fill, axis=1, keepdims=True)
    vecs = np.vstack([np.stack(vecs), fill])
    n = len(vecs)
    labels = [0, 1, 2, 0, 4, 5, 6, 0] + [7 + i for i in range(n_fill)]
    groups = ["p1", "p1"] + [None] * (n - 2)
    path = str(tmp_path / "planted.pkl")
    # R (removed) duplicates A (phash) and C (semantic): A and C are one near-duplicate component
    ids0 = make_partitions(vecs, path + ".tmp", label=labels, group_id=groups)
    dec = [decision(ids0[7], ids0[0], 0.99, "phash"), decision(ids0[7], ids0[2], 0.95, "semantic")]
    ids = make_partitions(vecs, path, decisions=dec, label=labels, group_id=groups)
    assert ids == ids0
    return path, dict(zip(NAMES, ids)), ids


def run(tmp_path, path, **params):
    cfg = PipelineConfig(name="t", stages=[{"stage": "test.planted", "path": path}, {"stage": "dedup.apply"},
                                           {"stage": "mine.negatives", "num_negatives": 2, "range_max": 10, **params}])
    summary = run_pipeline(cfg, run_dir=str(tmp_path / "run"), scheduler="sync", progress=False, force=True)
    pairs = read_run_table(tmp_path / "run", "02_mine_negatives")
    return pairs, summary


def negatives_of(pairs, sid):
    row = pairs.filter(pc.equal(pairs.column("anchor_id"), sid)).to_pylist()
    assert len(row) == 1
    return row[0]


def stats(tmp_path, stage="02_mine_negatives"):
    import json
    import os
    d = tmp_path / "run" / stage
    total = {}
    for f in os.listdir(d):
        if f.endswith(".json"):
            for k, v in json.load(open(d / f))["stats"].items():
                total[k] = total.get(k, 0) + v
    return total


def test_guards_remove_every_planted_false_negative(tmp_path):
    path, names, ids = planted(tmp_path)
    pairs, _ = run(tmp_path, path)
    a = negatives_of(pairs, names["A"])
    assert a["negative_ids"] == [names["F"], names["G"]]
    assert a["negative_scores"] == pytest.approx([0.80, 0.70], abs=1e-4)
    assert a["positive_kind"] is None and a["positive_score"] == pytest.approx(1.0)
    # R was removed by dedup: it is not an anchor and never a negative
    assert names["R"] not in pairs.column("anchor_id").to_pylist()
    assert all(names["R"] not in (r or []) for r in pairs.column("negative_ids").to_pylist())
    assert pairs.num_rows == len(ids) - 1  # one row per kept anchor
    st = stats(tmp_path)
    for g in ("near_duplicate", "group", "label", "margin"):
        assert st[f"rejected_{g}"] >= 1, g
    assert st["anchors"] == len(ids) - 1 and st["knn_index_flat"] == 1


@pytest.mark.parametrize("off,expected", [
    ("guard_margin", ["E", "F"]),
    ("guard_group", ["B", "F"]),
    ("guard_near_duplicate", ["C", "F"]),
    ("guard_label", ["D", "F"]),
])
def test_each_guard_is_switchable(tmp_path, off, expected):
    path, names, _ = planted(tmp_path)
    pairs, _ = run(tmp_path, path, **{off: False})
    assert negatives_of(pairs, names["A"])["negative_ids"] == [names[k] for k in expected]


def test_naive_topk_without_guards(tmp_path):
    path, names, _ = planted(tmp_path)
    pairs, _ = run(tmp_path, path, guard_margin=False, guard_group=False, guard_near_duplicate=False,
                   guard_label=False, num_negatives=4)
    assert negatives_of(pairs, names["A"])["negative_ids"] == [names[k] for k in ("E", "B", "C", "D")]


def test_rank_window_and_semi_hard(tmp_path):
    path, names, _ = planted(tmp_path)
    pairs, _ = run(tmp_path, path, range_min=5, guard_margin=False, guard_group=False, guard_near_duplicate=False,
                   guard_label=False)
    # ranks 0..4 (E B C D F) skipped
    assert negatives_of(pairs, names["A"])["negative_ids"][0] == names["G"]
    pairs, _ = run(tmp_path, path, sampling="semi_hard", semi_hard_pool=3, guard_margin=False, guard_group=False,
                   guard_near_duplicate=False, guard_label=False)
    got = negatives_of(pairs, names["A"])
    assert set(got["negative_ids"]) <= {names["E"], names["B"], names["C"]} and len(got["negative_ids"]) == 2
    assert got["negative_scores"] == sorted(got["negative_scores"], reverse=True)


def test_short_anchors_search_on_to_range_extend(tmp_path):
    path, names, ids = planted(tmp_path)
    # window = ranks 0..5 (E B C D F G): guards leave F, G; the extension fills up from the fillers
    pairs, _ = run(tmp_path, path, num_negatives=4, range_max=6)
    got = negatives_of(pairs, names["A"])["negative_ids"]
    assert got[:2] == [names["F"], names["G"]] and len(got) == 4 and set(got[2:]) <= set(ids[8:])
    st = stats(tmp_path)
    assert st["anchors_extended"] >= 1 and st["negatives_from_extension"] >= 2
    pairs, _ = run(tmp_path, path, num_negatives=4, range_max=6, range_extend=None)
    assert negatives_of(pairs, names["A"])["negative_ids"] == [names["F"], names["G"]]
    assert stats(tmp_path)["anchors_short"] >= 1


def test_margin_uses_the_mined_positive_score(tmp_path):
    # with positives mined first, A's reference positive is its nn E (0.97), not its near-duplicate R (a pHash
    # score 0.99, not a cosine): threshold 0.95*0.97 = 0.92
    path, names, _ = planted(tmp_path)
    cfg = PipelineConfig(name="t", stages=[
        {"stage": "test.planted", "path": path}, {"stage": "dedup.apply"},
        {"stage": "mine.positives", "kinds": ["near_duplicate", "nn"]},
        {"stage": "mine.negatives", "num_negatives": 2, "range_max": 10, "guard_group": False,
         "guard_near_duplicate": False, "guard_label": False}])
    run_pipeline(cfg, run_dir=str(tmp_path / "run2"), scheduler="sync", progress=False)
    pairs = read_run_table(tmp_path / "run2", "03_mine_negatives")
    neg = pairs.filter(pc.is_valid(pairs.column("negative_ids")))
    pos = pairs.filter(pc.is_valid(pairs.column("positive_kind")))
    # positives pass through: one nn row per anchor + A's near-duplicate, and one negatives row per anchor
    assert pos.num_rows == neg.num_rows + 1
    a = negatives_of(neg, names["A"])
    assert a["positive_id"] == names["E"] and a["positive_score"] == pytest.approx(0.97, abs=1e-4)
    # E is A's positive (excluded), B 0.90 < 0.9215 passes now
    assert a["negative_ids"] == [names["B"], names["C"]]


def test_approximate_index_reports_recall(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    path = str(tmp_path / "p.pkl")
    make_partitions(x, path)
    cfg = PipelineConfig(name="t", stages=[{"stage": "test.planted", "path": path},
                                           {"stage": "mine.negatives", "index": "ivf", "nlist": 8, "nprobe": 8,
                                            "block_size": 128}])
    run_pipeline(cfg, run_dir=str(tmp_path / "run"), scheduler="sync", progress=False)
    st = stats(tmp_path, "01_mine_negatives")
    assert st["knn_index_ivf"] == 1 and st["knn_recall"] == pytest.approx(1.0, abs=0.02)
    pairs = read_run_table(tmp_path / "run", "01_mine_negatives")
    assert pairs.num_rows == 600 and all(len(v) == 8 for v in pairs.column("negative_ids").to_pylist())


def test_bad_rank_window_is_a_clear_config_error(tmp_path):
    from curate.errors import CurateError
    path, _, _ = planted(tmp_path)
    cfg = PipelineConfig(name="t", stages=[{"stage": "test.planted", "path": path},
                                           {"stage": "mine.negatives", "range_min": 10, "range_max": 5}])
    with pytest.raises(CurateError, match="range_min"):
        run_pipeline(cfg, run_dir=str(tmp_path / "run"), scheduler="sync", progress=False)


def test_missing_embeddings_is_a_clear_error(tmp_path):
    from curate.errors import CurateError
    from tests.conftest import write_idx
    img = write_idx(str(tmp_path / "i.gz"), np.zeros((4, 5, 5), np.uint8) + np.arange(4, dtype=np.uint8)[:, None, None])
    cfg = PipelineConfig(name="t", stages=[{"stage": "ingest", "sources": [{"type": "idx", "images": img}]},
                                           {"stage": "mine.negatives"}])
    with pytest.raises(CurateError, match="add `- stage: embed`"):
        run_pipeline(cfg, run_dir=str(tmp_path / "run"), scheduler="sync", progress=False)


@pytest.mark.slow
def test_mining_blocks_run_as_dask_tasks(tmp_path):
    path, names, _ = planted(tmp_path)
    cfg = PipelineConfig(name="t", stages=[{"stage": "test.planted", "path": path}, {"stage": "dedup.apply"},
                                           {"stage": "mine.positives", "kinds": ["nn"], "block_size": 64},
                                           {"stage": "mine.negatives", "num_negatives": 2, "range_max": 10,
                                            "block_size": 64}])
    run_pipeline(cfg, run_dir=str(tmp_path / "run"), scheduler="local", workers=2, progress=False)
    pairs = read_run_table(tmp_path / "run", "03_mine_negatives")
    neg = pairs.filter(pc.is_valid(pairs.column("negative_ids")))
    assert neg.num_rows == 39
