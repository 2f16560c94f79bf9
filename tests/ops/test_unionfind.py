"""curate.ops.unionfind: components, representatives, keep-first."""

import numpy as np

from curate.ops import unionfind as U


def test_components_label_is_smallest_member():
    lab = U.components(7, [5, 1, 3], [1, 6, 4])
    assert lab.tolist() == [0, 1, 2, 3, 3, 1, 1]
    assert U.components(3, [], []).tolist() == [0, 1, 2]


def test_union_find_class_agrees_with_components():
    rng = np.random.default_rng(0)
    src, dst = rng.integers(0, 200, 150), rng.integers(0, 200, 150)
    uf = U.UnionFind(200)
    uf.union_many(src, dst)
    assert uf.labels().tolist() == U.components(200, src, dst).tolist()


def test_components_by_key_and_keep_first():
    keys = np.array(["a", "b", "a", "c", "b", "a"])
    s, d = U.components_by_key(keys)
    lab = U.components(6, s, d)
    rank = np.array([5, 4, 3, 2, 1, 0])  # reversed order: the last row is "first"
    rep, keep, size = U.keep_first(lab, rank)
    assert rep.tolist() == [5, 4, 5, 3, 4, 5]
    assert keep.tolist() == [False, False, False, True, True, True]
    assert size.tolist() == [3, 2, 3, 1, 2, 3]


def test_greedy_keep_first_does_not_chain():
    # 0~1 (sim .9), 1~2 (sim .9), 0 and 2 not linked: 1 goes to 0, 2 stays (its only link is removed)
    keep, rep = U.greedy_keep_first(4, [0, 1, 3], [1, 2, 0], [0.9, 0.9, 0.5], rank=np.arange(4))
    assert keep.tolist() == [True, False, True, False]
    assert rep.tolist() == [0, 0, 2, 0]
    # the most similar kept earlier node is the representative
    keep, rep = U.greedy_keep_first(3, [0, 1], [2, 2], [0.5, 0.9], rank=np.arange(3))
    assert keep.tolist() == [True, True, False] and rep[2] == 1
