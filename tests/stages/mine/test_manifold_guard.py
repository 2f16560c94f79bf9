"""Label-free false-negative control: the manifold guard, anchors served, block-size independence."""

import numpy as np
import pyarrow.compute as pc

import tests.stages.mine._fixture  # noqa: F401 - registers test.planted
from curate.config import PipelineConfig
from curate.runner import run_pipeline
from tests.conftest import read_run_table
from tests.stages.mine._fixture import make_partitions

CLASSES, PER = 20, 40


def blobs(tmp_path):
    """20 tight classes in 32-d: every sample's nearest neighbours are same-class near-copies. No labels given."""
    rng = np.random.default_rng(3)
    centers = rng.normal(size=(CLASSES, 32))
    x = np.repeat(centers, PER, axis=0) + 0.35 * rng.normal(size=(CLASSES * PER, 32))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    path = str(tmp_path / "blobs.pkl")
    ids = make_partitions(x, path, n_parts=3)
    return path, dict(zip(ids, np.repeat(np.arange(CLASSES), PER).tolist()))


def mine(tmp_path, path, run="run", **params):
    cfg = PipelineConfig(name="t", stages=[{"stage": "test.planted", "path": path},
                                           {"stage": "mine.negatives", "num_negatives": 4, **params}])
    run_pipeline(cfg, run_dir=str(tmp_path / run), scheduler="sync", progress=False)
    return read_run_table(tmp_path / run, "01_mine_negatives")


def fn_share(pairs, true):
    a = [true[r["anchor_id"]] for r in pairs.to_pylist() for _ in r["negative_ids"]]
    b = [true[x] for r in pairs.to_pylist() for x in r["negative_ids"]]
    return float(np.mean(np.array(a) == np.array(b)))


def test_default_rejects_same_class_neighbours_without_labels(tmp_path):
    path, true = blobs(tmp_path)
    naive = mine(tmp_path, path, "naive", guard_manifold=False, guard_margin=False)
    assert fn_share(naive, true) > 0.95  # nearest neighbours are all same-class copies
    pairs = mine(tmp_path, path)
    assert pairs.num_rows == CLASSES * PER
    assert fn_share(pairs, true) == 0.0
    served = np.mean([len(v) == 4 for v in pairs.column("negative_ids").to_pylist()])
    assert served >= 0.99
    # each negative is its anchor's nearest sample of another class or close to it: still hard
    scores = np.array([s for v in pairs.column("negative_scores").to_pylist() for s in v])
    assert np.all(np.isfinite(scores))


def test_block_size_does_not_change_the_pairs_table(tmp_path):
    path, _ = blobs(tmp_path)
    for sampling in ("semi_hard", "top"):
        a = mine(tmp_path, path, f"b64{sampling}", block_size=64, sampling=sampling, semi_hard_pool=8)
        b = mine(tmp_path, path, f"b512{sampling}", block_size=512, sampling=sampling, semi_hard_pool=8)
        key = pc.sort_indices(a, [("anchor_id", "ascending")])
        a, b = a.take(key), b.take(pc.sort_indices(b, [("anchor_id", "ascending")]))
        assert a.equals(b), sampling


def test_semi_hard_draws_depend_on_the_seed(tmp_path):
    path, _ = blobs(tmp_path)
    a = mine(tmp_path, path, "s0", sampling="semi_hard", semi_hard_pool=16, seed=0)
    b = mine(tmp_path, path, "s1", sampling="semi_hard", semi_hard_pool=16, seed=1)
    assert a.column("negative_ids").to_pylist() != b.column("negative_ids").to_pylist()


def test_labels_give_tradeoff_counters_and_a_card_plot(tmp_path):
    from curate.card.build import build_card
    rng = np.random.default_rng(3)
    centers = rng.normal(size=(CLASSES, 32))
    x = np.repeat(centers, PER, axis=0) + 0.35 * rng.normal(size=(CLASSES * PER, 32))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    path = str(tmp_path / "lab.pkl")
    make_partitions(x, path, n_parts=2, label=np.repeat(np.arange(CLASSES), PER).tolist())
    cfg = PipelineConfig(name="t", stages=[{"stage": "test.planted", "path": path},
                                           {"stage": "mine.negatives", "num_negatives": 4}])
    summary = run_pipeline(cfg, run_dir=str(tmp_path / "run"), scheduler="sync", progress=False)
    c = summary["stages"]["01_mine_negatives"]["counters"]
    assert c["tradeoff_naive_topk_fn_share"] > 0.95 and c["tradeoff_chosen_fn_share"] == 0.0
    assert c["tradeoff_chosen_served"] == 1.0 and c["rejected_manifold"] > 0
    md = open(build_card(str(tmp_path / "run"), str(tmp_path / "cards"), name="c")).read()
    assert "| **chosen** | 0.0% |" in md and (tmp_path / "cards" / "c" / "mining_tradeoff.png").is_file()


def test_calibrated_margin_serves_anchors_when_cosines_crowd_near_one(tmp_path):
    """ReLU-pooled features (the ssl encoder) share a large common direction: every cosine is near 1, so the
    plain TopK-PercPos margin (0.95 x a ~0.99 positive) rejects nearly every candidate. Measured from the
    median random-pair cosine it keeps its meaning; the manifold guard still rejects the same-class ones."""
    rng = np.random.default_rng(3)
    centers = rng.normal(size=(CLASSES, 32))
    x = np.repeat(centers, PER, axis=0) + 0.35 * rng.normal(size=(CLASSES * PER, 32))
    x = x / np.linalg.norm(x, axis=1, keepdims=True) + 2.0  # common offset: random-pair cosine ~0.99
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    path = str(tmp_path / "crowded")
    ids = make_partitions(x, path, n_parts=2)
    true = dict(zip(ids, np.repeat(np.arange(CLASSES), PER).tolist()))
    cfg = PipelineConfig(name="t", stages=[{"stage": "test.planted", "path": path},
                                           {"stage": "mine.positives", "kinds": ["nn"]},
                                           {"stage": "mine.negatives", "num_negatives": 4}])

    def served(run, **params):
        cfg.stages[2].update(params)
        summary = run_pipeline(cfg, run_dir=str(tmp_path / run), scheduler="sync", progress=False)
        pairs = read_run_table(tmp_path / run, "02_mine_negatives")
        pairs = pairs.filter(pc.is_valid(pairs.column("negative_ids")))
        c = summary["stages"]["02_mine_negatives"]["counters"]
        return np.mean([len(v) == 4 for v in pairs.column("negative_ids").to_pylist()]), pairs, c

    plain, _, _ = served("plain", margin_calibrate=False)
    assert plain < 0.5
    ok, pairs, c = served("calibrated", margin_calibrate=True)
    assert c["margin_base"] > 0.95
    assert ok >= 0.99
    assert fn_share(pairs, true) <= 0.05
