import os

import numpy as np
import pytest

from curate.ops import faiss_knn
from curate.ops.faiss_knn import KnnSpec


def data(n=800, d=16, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(20, d))
    x = centers[rng.integers(0, 20, n)] + 0.3 * rng.normal(size=(n, d))
    return faiss_knn.normalise(x)


def test_exact_search_matches_flat_index():
    x = data()
    s1, i1 = faiss_knn.exact_search(x, x[:50], 5)
    s2, i2 = faiss_knn.build_index(x, KnnSpec(kind="flat")).search(x[:50], 5)
    assert np.allclose(s1, s2, atol=1e-5)
    assert (i1[:, 0] == np.arange(50)).all() and (i2[:, 0] == np.arange(50)).all()


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_have_measured_high_recall(kind):
    x = data()
    index = faiss_knn.build_index(x, KnnSpec(kind=kind, nprobe=8))
    r = faiss_knn.measure_recall(index, x, 10, sample=200)
    assert 0.85 <= r <= 1.0


def test_auto_switches_at_exact_max():
    assert KnnSpec(exact_max=100).resolve(100) == "flat"
    assert KnnSpec(exact_max=100).resolve(101) == "ivf"


def test_blocked_knn_equals_one_search_and_uses_the_mapper(tmp_path):
    x = data(500)
    calls = []

    def mapper(fn, items):
        calls.append(len(items))
        return [fn(i) for i in items]

    s, i, info = faiss_knn.knn(x, 6, str(tmp_path), KnnSpec(kind="flat"), block=128, mapper=mapper)
    s_ref, i_ref = faiss_knn.exact_search(x, x, 6)
    assert calls == [4] and s.shape == (500, 6)
    assert np.allclose(s, s_ref, atol=1e-5) and info["index"] == "flat" and "recall_at_k" not in info
    _, _, info = faiss_knn.knn(x, 6, str(tmp_path), KnnSpec(kind="ivf", nprobe=4), block=128)
    assert info["index"] == "ivf" and 0 < info["recall_at_k"] <= 1


def test_prepare_reuses_an_identical_index(tmp_path):
    x = data(300)
    v1, p1, _ = faiss_knn.prepare(x, str(tmp_path))
    t = os.path.getmtime(p1)
    v2, p2, _ = faiss_knn.prepare(x.copy(), str(tmp_path))
    assert (v1, p1) == (v2, p2) and os.path.getmtime(p2) == t
    _, p3, _ = faiss_knn.prepare(x[:-1], str(tmp_path))
    assert p3 != p1


def test_search_settings_do_not_rebuild_the_index(tmp_path):
    x = data(400)
    _, p1, i1 = faiss_knn.prepare(x, str(tmp_path), KnnSpec(kind="ivf", nlist=8, nprobe=2))
    _, p2, i2 = faiss_knn.prepare(x, str(tmp_path), KnnSpec(kind="ivf", nlist=8, nprobe=6))
    assert p1 == p2 and i1.nprobe == 2 and i2.nprobe == 6
