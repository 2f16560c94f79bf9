"""The label-free false-negative guard on small real images with known answers: scikit-learn's digits.

1,797 real 8x8 handwritten digits (UCI optdigits, shipped inside scikit-learn) in 10 classes. The miner sees
only their embeddings (mean-centred raw pixels, unit length), never the labels nor group ids. The known answers:
a digit's nearest neighbours are almost all the same digit (naive top-k FN share ~97%), and the defaults must
bring that under 25% while the negatives stay hard (above the 90th percentile of random pairs in raw pixel space)
and every anchor is served.
"""

import numpy as np
import pyarrow.compute as pc
import pytest

import tests.stages.mine._fixture  # noqa: F401 - registers test.planted
from curate.config import PipelineConfig
from curate.runner import run_pipeline
from tests.conftest import read_run_table
from tests.stages.mine._fixture import make_partitions

datasets = pytest.importorskip("sklearn.datasets")
K = 8


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    d = datasets.load_digits()
    raw = d.data.astype(np.float32)
    x = raw - raw.mean(0)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    path = str(tmp_path_factory.mktemp("digits") / "planted")
    ids = make_partitions(x, path, n_parts=3)  # no label, no group_id columns
    row = {s: i for i, s in enumerate(ids)}
    return path, row, d.target, raw / np.linalg.norm(raw, axis=1, keepdims=True)


def mine(tmp_path, path, run, **params):
    cfg = PipelineConfig(name="t", stages=[{"stage": "test.planted", "path": path},
                                           {"stage": "mine.negatives", "num_negatives": K, **params}])
    summary = run_pipeline(cfg, run_dir=str(tmp_path / run), scheduler="sync", progress=False)
    return read_run_table(tmp_path / run, "01_mine_negatives"), summary["stages"]["01_mine_negatives"]["counters"]


def measure(pairs, row, y, ref):
    """(false-negative share, hardness percentile in raw pixel space, share of anchors with K negatives)."""
    a = np.array([row[s] for s in pairs.column("anchor_id").to_pylist()])
    lists = [[row[s] for s in v] for v in pairs.column("negative_ids").to_pylist()]
    aa = np.repeat(a, [len(v) for v in lists])
    nn = np.array([j for v in lists for j in v])
    rng = np.random.default_rng(0)
    p, q = rng.integers(0, len(y), 50000), rng.integers(0, len(y), 50000)
    rand = np.sort(np.einsum("ij,ij->i", ref[p], ref[q]))
    cos = float(np.einsum("ij,ij->i", ref[aa], ref[nn]).mean())
    served = float(np.mean([len(v) == K for v in lists]))
    return float((y[aa] == y[nn]).mean()), 100.0 * np.searchsorted(rand, cos) / len(rand), served


def test_defaults_keep_false_negatives_low_and_negatives_hard_without_labels(tmp_path, digits):
    path, row, y, ref = digits
    naive, _ = mine(tmp_path, path, "naive", guard_manifold=False, guard_margin=False)
    fn, hard, served = measure(naive, row, y, ref)
    assert fn > 0.9 and hard > 97  # the trap: the hardest candidates are the same digit
    pairs, c = mine(tmp_path, path, "default")
    assert pairs.num_rows == len(y) and c["label_guard_inactive_no_labels"] == 1
    fn, hard, served = measure(pairs, row, y, ref)
    assert fn <= 0.25, fn
    assert hard >= 90, hard
    assert served >= 0.99, served
    assert c["rejected_manifold"] > 0 and c["anchors_without_negatives"] == 0


def test_digits_pairs_do_not_depend_on_block_size(tmp_path, digits):
    path, *_ = digits
    a, _ = mine(tmp_path, path, "b128", block_size=128)
    b, _ = mine(tmp_path, path, "b4096", block_size=4096)
    a = a.take(pc.sort_indices(a, [("anchor_id", "ascending")]))
    b = b.take(pc.sort_indices(b, [("anchor_id", "ascending")]))
    assert a.equals(b)
