"""curate.ops.hamming: the multi-index search equals brute force, however it is split."""

import numpy as np
import pytest

from curate.ops import hamming as H
from curate.ops import unionfind as U


def planted(n: int, clusters: int, size: int, max_flip: int, seed: int = 0) -> np.ndarray:
    """Random 64-bit hashes plus near-duplicate clusters (copies with <= max_flip flipped bits)."""
    rng = np.random.default_rng(seed)
    v = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    for _ in range(clusters):
        base = v[rng.integers(n)]
        for _ in range(size):
            x = base
            for f in rng.choice(64, rng.integers(0, max_flip + 1), replace=False):
                x ^= np.uint64(1) << np.uint64(f)
            v[rng.integers(n)] = x
    return np.unique(v)


def same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("t", [1, 2, 3, 6, 10, 13])
def test_every_layout_equals_brute_force(t):
    v = planted(1500, 40, 6, t + 3, seed=t)
    ref = H.brute_force_pairs(v, t)
    assert len(ref[0]) > 0
    for m in range(2, 7):
        bands = H._layout(m, t)
        if bands is not None:
            assert same(H.pairs(v, t, bands=bands), ref), (t, m)


def test_split_into_tasks_does_not_change_the_answer():
    v = planted(3000, 60, 8, 12, seed=1)
    bands = H._layout(3, 10)
    ref = H.brute_force_pairs(v, 10)
    calls = []

    def mapper(fn, items):
        calls.append(len(items))
        return [fn(x) for x in reversed(items)]

    for splits in (1, 2, 7):
        assert same(H.pairs(v, 10, mapper=mapper, splits=splits, bands=bands), ref)
    assert calls == [3, 6, 21]


def test_plan_prefers_brute_force_for_tiny_inputs_and_bands_for_large():
    assert H.plan(50, 10) is None
    bands = H.plan(1_000_000, 10)
    assert bands is not None and sum(b.radius + 1 for b in bands) >= 11
    assert sum(b.width for b in bands) == 64


def test_components_with_duplicates_and_groups():
    rng = np.random.default_rng(3)
    base = rng.integers(0, 2**64 - 1, 40, dtype=np.uint64, endpoint=True)
    h = np.concatenate([base, base[:10], base[:5] ^ np.uint64(0b111)])  # exact copies + 3-bit variants
    groups = np.array(["a"] * 40 + ["a"] * 5 + ["b"] * 5 + ["a"] * 5)
    lab = H.components(h, 3)
    d = np.bitwise_count(h[:, None] ^ h[None, :]) <= 3
    ii, jj = np.nonzero(d)
    assert lab.tolist() == U.components(h.size, ii, jj).tolist()
    lab_g = H.components(h, 3, groups=groups)
    same_group = groups[:, None] == groups[None, :]
    ii, jj = np.nonzero(d & same_group)
    assert lab_g.tolist() == U.components(h.size, ii, jj).tolist()
    assert lab_g[45] != lab_g[0]  # group "b" copy is not merged into group "a"
