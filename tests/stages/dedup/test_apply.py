"""dedup.apply: kept set + removal log from every decision table; accounting balances."""

from __future__ import annotations

import numpy as np

from curate.config import PipelineConfig
from curate.runner import run_pipeline
from tests.conftest import read_run_table
from tests.stages.dedup._helpers import near_duplicate_images


def _pipeline(tmp_path, corrupt=(), methods=None):
    images, _ = near_duplicate_images(24, 0)
    np.savez(tmp_path / "x.npz", images=images, labels=np.arange(24) % 6)
    apply = {"stage": "dedup.apply"} if methods is None else {"stage": "dedup.apply", "methods": methods}
    return PipelineConfig(name="t", stages=[
        {"stage": "test.arrays", "path": str(tmp_path / "x.npz"), "partition_size": 8, "corrupt": list(corrupt)},
        {"stage": "embed", "encoder": "random_cnn", "image_size": 16},
        {"stage": "test.plant_decisions", "name": "first", "method": "exact", "remove_labels": [1, 2]},
        {"stage": "test.plant_decisions", "name": "second", "method": "phash", "remove_labels": [2, 3]},
        apply])


def test_first_method_wins_and_log_explains(tmp_path):
    summary = run_pipeline(_pipeline(tmp_path), run_dir=str(tmp_path / "run"), scheduler="sync", progress=False)
    samples = read_run_table(tmp_path / "run", "00_test_arrays")
    label = dict(zip(samples.column("sample_id").to_pylist(), samples.column("label").to_pylist()))
    kept = read_run_table(tmp_path / "run", "04_dedup_apply")
    removals = read_run_table(tmp_path / "run", "04_dedup_apply", "removals")
    assert sorted({label[s] for s in kept.column("sample_id").to_pylist()}) == [0, 4, 5]
    assert kept.num_rows == 12 and removals.num_rows == 12
    by_label = {}
    for row in removals.to_pylist():
        by_label.setdefault(label[row["sample_id"]], set()).add(row["method"])
        assert label[row["representative_id"]] == 0 and row["score"] == 0.5 and row["reason"]
    assert by_label == {1: {"exact"}, 2: {"exact"}, 3: {"phash"}}  # label 2: exact came first
    assert kept.schema.equals(samples.schema)
    acc = summary["accounting"]
    assert (acc["ingested"], acc["kept"], acc["removed"], acc["quarantined"], acc["balanced"]) == (24, 12, 12, 0, True)
    c = summary["stages"]["04_dedup_apply"]["counters"]
    assert c["removed_by_02_first"] == 8 and c["removed_by_03_second"] == 4


def test_quarantined_samples_are_neither_kept_nor_removed(tmp_path):
    # row 1 (label 1: would be removed) and row 4 (label 4: would be kept) cannot be decoded by embed
    summary = run_pipeline(_pipeline(tmp_path, corrupt=[1, 4]), run_dir=str(tmp_path / "run"), scheduler="sync",
                           progress=False)
    samples = read_run_table(tmp_path / "run", "00_test_arrays")
    bad = {samples.column("sample_id")[i].as_py() for i in (1, 4)}
    kept = set(read_run_table(tmp_path / "run", "04_dedup_apply").column("sample_id").to_pylist())
    removed = set(read_run_table(tmp_path / "run", "04_dedup_apply", "removals").column("sample_id").to_pylist())
    assert not bad & kept and not bad & removed
    acc = summary["accounting"]
    assert (acc["ingested"], acc["kept"], acc["removed"], acc["quarantined"], acc["balanced"]) == (24, 11, 11, 2, True)


def test_methods_filter(tmp_path):
    summary = run_pipeline(_pipeline(tmp_path, methods=["phash"]), run_dir=str(tmp_path / "run"), scheduler="sync",
                           progress=False)
    removals = read_run_table(tmp_path / "run", "04_dedup_apply", "removals")
    assert set(removals.column("method").to_pylist()) == {"phash"} and removals.num_rows == 8
    assert summary["accounting"]["balanced"]


def _edges_pipeline(tmp_path, methods: dict[str, list[list[int]]], n: int = 24, partition_size: int = 8):
    images, _ = near_duplicate_images(n, 0)
    np.savez(tmp_path / "x.npz", images=images)
    stages = [{"stage": "test.arrays", "path": str(tmp_path / "x.npz"), "partition_size": partition_size}]
    stages += [{"stage": "test.plant_edges", "name": name, "method": name, "edges": edges}
               for name, edges in methods.items()]
    return PipelineConfig(name="t", stages=stages + [{"stage": "dedup.apply"}])


def _resolved(tmp_path, methods, **kw):
    summary = run_pipeline(_edges_pipeline(tmp_path, methods, **kw), run_dir=str(tmp_path / "run"),
                           scheduler="sync", progress=False)
    d = f"{len(methods) + 1:02d}_dedup_apply"
    samples = read_run_table(tmp_path / "run", "00_test_arrays")
    index = dict(zip(samples.column("sample_id").to_pylist(), samples.column("source_index").to_pylist()))
    kept = {index[s] for s in read_run_table(tmp_path / "run", d).column("sample_id").to_pylist()}
    removals = {index[r["sample_id"]]: (index[r["representative_id"]], r["method"], r["reason"])
                for r in read_run_table(tmp_path / "run", d, "removals").to_pylist()}
    return summary, kept, removals


def _check_invariants(methods, kept, removals, n):
    assert len(kept) + len(removals) == n
    pairs = {frozenset(e): m for m, edges in methods.items() for e in edges}
    for i, (rep, method, reason) in removals.items():
        assert rep in kept, f"{i} names {rep}, which is not kept"
        assert frozenset((i, rep)) in pairs, f"{i} removed for {rep}: not a decided pair (chaining)"
        assert reason
    # no group emptied: every connected component of the planted edges keeps a member
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    e = np.array([x for edges in methods.values() for x in edges] or np.zeros((0, 2)), np.int64).reshape(-1, 2)
    _, lab = connected_components(sp.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n)), directed=False)
    assert {lab[k] for k in kept} == set(lab.tolist())


def test_methods_that_disagree_never_empty_a_group(tmp_path):
    # exact: 1 -> 0; phash: 0 -> 1 (a 2-cycle); semantic: 3 -> 2, 2 -> 4, 4 -> 3 (a 3-cycle across methods
    # and partitions: 10 -> 20 and 20 -> 10 in different partitions)
    methods = {"exact": [[1, 0], [3, 2], [10, 20]], "phash": [[0, 1], [2, 4]], "semantic": [[4, 3], [20, 10]]}
    summary, kept, removals = _resolved(tmp_path, methods)
    _check_invariants(methods, kept, removals, 24)
    assert 0 in kept and removals[1][:2] == (0, "exact")  # the first method's direction where it can be honoured
    # 10 and 20 removed each other; 10 comes first, and of the two edges exact's (earlier in the pipeline) names it
    assert 10 in kept and removals[20][:2] == (10, "exact") and "resolved across methods" in removals[20][2]
    assert len({0, 1} & kept) == 1 and len({2, 3, 4} & kept) >= 1
    acc = summary["accounting"]
    assert acc["balanced"] and acc["groups_emptied"] == 0 and acc["representatives_not_kept"] == 0
    c = summary["stages"]["04_dedup_apply"]["counters"]
    assert c["groups_emptied"] == 0 and c["rescued"] >= 2


def test_random_disagreeing_methods_keep_invariants(tmp_path):
    rng = np.random.default_rng(7)
    for trial in range(4):
        methods = {m: [list(map(int, rng.choice(30, 2, replace=False))) for _ in range(rng.integers(3, 15))]
                   for m in ("exact", "phash", "semantic")}
        for edges in methods.values():  # a method removes each sample at most once
            seen: dict[int, list[int]] = {}
            for a, b in edges:
                seen.setdefault(a, [a, b])
            edges[:] = list(seen.values())
        run = tmp_path / f"t{trial}"
        run.mkdir()
        summary, kept, removals = _resolved(run, methods, n=30, partition_size=7)
        _check_invariants(methods, kept, removals, 30)
        assert summary["accounting"]["balanced"]


def test_resolution_does_not_depend_on_partition_size(tmp_path):
    methods = {"exact": [[1, 0], [5, 9], [9, 13]], "phash": [[0, 1], [13, 5], [7, 2]], "semantic": [[2, 7], [8, 1]]}
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    _, kept_a, rem_a = _resolved(a, methods, partition_size=4)
    _, kept_b, rem_b = _resolved(b, methods, partition_size=24)
    assert kept_a == kept_b and rem_a == rem_b
