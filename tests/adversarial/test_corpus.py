"""A generated corpus of bad inputs (issue 12, "Checked by"): every kind becomes a quarantine row with its
reason, or stops the run with exit 2 and a message naming the file; never a traceback, never exit 1.

One pipeline run reads every quarantinable kind (image folder with truncated / zero-byte / wrong-magic /
CRC-broken / bomb-header files of each format and hostile names, npz arrays, parquet rows, a DICOM folder,
a NIfTI folder, and one source listed twice); each whole-file kind gets its own short run.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import tempfile

import pyarrow as pa
import pytest
import yaml
from typer.testing import CliRunner

from curate.cli import app
from tests.adversarial import _corpus
from tests.conftest import read_run_table

runner = CliRunner()

# built once at import: the parametrized tests need the kinds, the runs need the files
_ROOT = tempfile.mkdtemp(prefix="curate-corpus-")
atexit.register(shutil.rmtree, _ROOT, True)
os.makedirs(os.path.join(_ROOT, "exit2"))
CORPUS = _corpus.build(_ROOT)
EXIT2 = _corpus.EXIT_2(os.path.join(_ROOT, "exit2"))


def _run(tmp, name: str, sources: list[dict]):
    p = os.path.join(tmp, f"{name}.yaml")
    with open(p, "w") as f:
        yaml.safe_dump({"name": name, "stages": [{"stage": "ingest", "partition_size": 16, "sources": sources}]}, f)
    run_dir = os.path.join(tmp, f"run-{name}")
    r = runner.invoke(app, ["run", p, "--run-dir", run_dir, "--scheduler", "sync", "--quiet", "--no-card"])
    return r, run_dir


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("corpus"))
    corpus = CORPUS
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    log = logging.getLogger("curate.ingest")
    log.addHandler(handler)
    try:
        r, run_dir = _run(tmp, "corpus", corpus.sources)
    finally:
        log.removeHandler(handler)
    assert r.exit_code == 0, r.output
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    samples = read_run_table(run_dir, "00_ingest")
    quarantine = read_run_table(run_dir, "00_ingest", "quarantine")
    warned = "\n".join(rec.getMessage() for rec in records)
    return corpus, r.output + warned, summary, samples, quarantine


def test_corpus_has_at_least_60_kinds():
    kinds = set(CORPUS.bad) | set(EXIT2)
    assert len(kinds) >= 60, len(kinds)
    families = {k.split(":")[0].split("_")[0] if ":" not in k else k.split(":")[0] for k in kinds}
    assert {"folder", "npz", "parquet", "dicom", "nifti", "idx"} <= families


def test_corpus_run_is_clean_and_balanced(corpus_run):
    corpus, output, summary, samples, quarantine = corpus_run
    assert "Traceback" not in output and "internal error" not in output
    acc = summary["accounting"]
    assert acc["balanced"] and acc["ingested"] == acc["kept"] + acc["removed"] + acc["quarantined"]
    assert acc["kept"] == samples.num_rows and acc["quarantined"] == quarantine.num_rows
    # the folder source listed twice is read once: no sample id twice, a warning says so
    ids = samples.column("sample_id").to_pylist()
    assert len(ids) == len(set(ids))
    assert "sources[1] repeats sources[0]" in output
    # every quarantine row is one of the corpus' bad inputs: nothing good was quarantined
    expected = {(uri, idx) for uri, idx, _ in corpus.bad.values()}
    got = {(r["source_uri"], r["source_index"]) for r in quarantine.to_pylist()}
    assert got == expected
    for name, minimum in corpus.counters.items():
        assert summary["stages"]["00_ingest"]["counters"].get(name, 0) >= minimum, name


@pytest.mark.parametrize("kind", sorted(CORPUS.bad))
def test_bad_kind_is_quarantined_with_its_reason(corpus_run, kind):
    corpus, _, _, samples, quarantine = corpus_run
    uri, idx, reason = corpus.bad[kind]
    rows = [r for r in quarantine.to_pylist() if r["source_uri"] == uri and r["source_index"] == idx]
    assert len(rows) == 1, (kind, rows)
    assert rows[0]["reason"] == reason, (kind, rows[0])
    assert rows[0]["detail"]
    kept = samples.filter(pa.compute.equal(samples.column("source_uri"), uri))
    if idx is None:
        assert kept.num_rows == 0  # a quarantined file gives no samples
    else:
        assert idx not in kept.column("source_index").to_pylist()


@pytest.mark.parametrize("kind", sorted(CORPUS.good))
def test_good_input_next_to_bad_ones_is_kept(corpus_run, kind):
    corpus, _, _, samples, _ = corpus_run
    uri, idx = corpus.good[kind]
    rows = [r for r in samples.select(["source_uri", "source_index"]).to_pylist() if r["source_uri"] == uri]
    assert rows, kind
    if idx is not None:
        assert idx in [r["source_index"] for r in rows], kind


@pytest.mark.parametrize("kind", sorted(EXIT2))
def test_whole_file_problem_exits_2_naming_file_and_problem(tmp_path, kind):
    source, needles = EXIT2[kind]
    r, run_dir = _run(str(tmp_path), kind, [source])
    assert r.exit_code == 2, (kind, r.output)
    assert "Traceback" not in r.output and "internal error" not in r.output
    flat = " ".join(r.output.split())
    for n in needles:
        assert " ".join(n.split()) in flat, (kind, n, flat)
    # stopped when the run was planned: no ingest output
    assert not os.path.exists(os.path.join(run_dir, "00_ingest", "quarantine"))


def test_corpus_gives_the_same_rows_whatever_the_partition_size(corpus_run, tmp_path):
    _, _, _, samples, quarantine = corpus_run
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump({"name": "corpus", "stages": [{"stage": "ingest", "partition_size": 3,
                                                              "sources": CORPUS.sources}]}))
    r = runner.invoke(app, ["run", str(p), "--run-dir", str(tmp_path / "r"), "--scheduler", "sync", "--quiet",
                            "--no-card"])
    assert r.exit_code == 0, r.output
    again = read_run_table(tmp_path / "r", "00_ingest")
    key = ["sample_id", "pixel_hash", "source_uri", "source_index", "slice_index", "label", "label_name", "image"]
    assert again.select(key).sort_by("sample_id").equals(samples.select(key).sort_by("sample_id"))
    q = read_run_table(tmp_path / "r", "00_ingest", "quarantine")
    rows = lambda t: sorted(map(str, t.select(["source_uri", "source_index", "reason", "detail"]).to_pylist()))  # noqa: E731
    assert rows(q) == rows(quarantine)


@pytest.mark.slow
def test_corpus_on_a_local_dask_cluster_gives_the_sync_rows(corpus_run, tmp_path):
    """Payloads (non-UTF-8 names, skipped FIFOs, label maps) travel to worker processes unchanged."""
    _, _, summary, samples, _ = corpus_run
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump({"name": "corpus", "stages": [{"stage": "ingest", "partition_size": 16,
                                                              "sources": CORPUS.sources}]}))
    r = runner.invoke(app, ["run", str(p), "--run-dir", str(tmp_path / "r"), "--scheduler", "local", "--workers", "2",
                            "--quiet", "--no-card"])
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output
    again = read_run_table(tmp_path / "r", "00_ingest")
    key = ["sample_id", "source_uri", "source_index", "label", "image"]
    assert again.select(key).sort_by("sample_id").equals(samples.select(key).sort_by("sample_id"))
    with open(tmp_path / "r" / "summary.json") as f:
        assert json.load(f)["accounting"] == summary["accounting"]
