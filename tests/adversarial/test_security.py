"""Security and privacy: no pickle from a run directory, a race-free run lock, names that cannot
leave the run directory, no identifiers in outputs, escaped data strings in the card."""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time
from html.parser import HTMLParser

import pytest
import yaml
from typer.testing import CliRunner

from curate import io
from curate.cli import app
from curate.config import PipelineConfig, load_pipeline
from curate.errors import ConfigError, RunLockedError
from curate.io import RunLock
from curate.runner import run_pipeline
from tests.conftest import idx_pipeline

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ------------------------------------------------------------------ 2. the run lock
def _contend(run_dir, barrier, rounds, holders, max_holders, wins, errors):
    for r in range(rounds):
        barrier.wait()
        try:
            with RunLock(run_dir):
                with holders.get_lock():
                    holders.value += 1
                    max_holders.value = max(max_holders.value, holders.value)
                wins[r] += 1
                time.sleep(0.002)  # hold long enough for every contender to try meanwhile
                with holders.get_lock():
                    holders.value -= 1
        except RunLockedError as err:
            if "in use by another curate run" not in str(err):
                errors.value += 1
        except Exception:  # noqa: BLE001 - any other failure is a bug
            errors.value += 1
        barrier.wait()


def test_run_lock_has_one_holder_under_races(tmp_path):
    ctx = mp.get_context("fork")
    n, rounds = 4, 250
    barrier = ctx.Barrier(n)
    holders, max_holders, errors = ctx.Value("i", 0), ctx.Value("i", 0), ctx.Value("i", 0)
    wins = ctx.Array("i", rounds)
    run_dir = str(tmp_path / "run")
    procs = [ctx.Process(target=_contend, args=(run_dir, barrier, rounds, holders, max_holders, wins, errors))
             for _ in range(n)]
    t0 = time.time()
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    assert max_holders.value == 1, "two processes held the run lock at the same time"
    assert errors.value == 0
    assert min(wins) >= 1  # someone always gets it: a released or dead lock never blocks
    assert not os.path.exists(os.path.join(run_dir, "run.lock"))
    assert time.time() - t0 < 20


@pytest.mark.parametrize("content", [b"", b'{"pid": 12', b'{"pid": 1, "host": "%s"}' % socket.gethostname().encode()])
def test_empty_half_written_or_unlocked_lock_file_does_not_block(tmp_path, content):
    (tmp_path / "run.lock").write_bytes(content)
    with RunLock(str(tmp_path)) as lock:
        assert lock.held
    assert not (tmp_path / "run.lock").exists()


def test_lock_of_a_live_process_gives_exit_3_naming_pid_and_host(tmp_path, idx_dataset):
    img, lab, *_ = idx_dataset
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from curate.io import RunLock\n"
                               f"with RunLock({str(run)!r}):\n    print('held', flush=True); time.sleep(60)"],
                              cwd=REPO, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": REPO})
    try:
        assert holder.stdout.readline().strip() == "held"
        p = tmp_path / "p.yaml"
        p.write_text(yaml.safe_dump(idx_pipeline(img, lab)))
        r = CliRunner().invoke(app, ["run", str(p), "--run-dir", str(run), "--scheduler", "sync", "--quiet", "--no-card"])
        assert r.exit_code == 3, r.output
        assert f"pid {holder.pid} on {socket.gethostname()}" in r.output
    finally:
        holder.kill()
        holder.wait()
    # the holder died without releasing: the next run takes over at once
    assert run_pipeline(PipelineConfig(**idx_pipeline(img, lab)), str(run), scheduler="sync", progress=False)


def test_remote_lock_is_best_effort_but_exclusive_when_sequential(monkeypatch):
    monkeypatch.setattr(RunLock, "settle_s", 0.0)
    run = "memory://curate-lock-test/run"
    with RunLock(run):
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()} on"):
            RunLock(run).__enter__()
    with RunLock(run) as again:
        assert again.held
    assert not io.exists(io.join(run, "run.lock"))


# ------------------------------------------------------- 3. names cannot become paths
@pytest.mark.parametrize("where", ["pipeline", "stage"])
def test_traversal_in_names_is_a_config_error_and_writes_nothing(tmp_path, idx_dataset, where):
    img, lab, *_ = idx_dataset
    cfg = idx_pipeline(img, lab)
    evil = "../../../../escaped"
    if where == "pipeline":
        cfg["name"] = evil
    else:
        cfg["stages"][0]["name"] = evil
    work = tmp_path / "a" / "b" / "c"
    work.mkdir(parents=True)
    p = work / "p.yaml"
    p.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match="not a valid name"):
        load_pipeline(p)
    before = sorted(str(x) for x in tmp_path.rglob("*"))
    r = CliRunner().invoke(app, ["run", str(p), "--run-dir", str(work / "run"), "--scheduler", "sync", "--quiet",
                                 "--card-dir", str(work / "cards")])
    assert r.exit_code == 2 and "not a valid name" in r.output
    assert sorted(str(x) for x in tmp_path.rglob("*")) == before
    assert not (tmp_path / "escaped").exists()


@pytest.mark.parametrize("bad", ["..", "../x", "a/../../x", ".hidden", "a b", ""])
def test_io_refuses_paths_that_leave_the_run_dir(bad):
    with pytest.raises(ConfigError):
        io.part_path("/runs/r", "00_ingest", bad)
    with pytest.raises(ConfigError):
        io.part_path("/runs/r", bad or "..", "abc")
    with pytest.raises(ConfigError):
        io.manifest_path("/runs/r", "00_ingest", bad)
    if ".." in bad:
        with pytest.raises(ConfigError):
            io.join("/runs/r", bad, "part-x.parquet")
    assert io.part_path("/runs/r", "02_dedup_phash/_map", "syn-00001", "quarantine") == \
        "/runs/r/02_dedup_phash/_map/quarantine/part-syn-00001.parquet"


def test_card_cannot_escape_its_directory(tmp_path, idx_dataset):
    from curate.card.build import build_card, card_name

    img, lab, *_ = idx_dataset
    run = tmp_path / "run"
    run_pipeline(PipelineConfig(**idx_pipeline(img, lab)), str(run), scheduler="sync", progress=False)
    cards = tmp_path / "deep" / "cards"
    with pytest.raises(ConfigError, match="card name"):
        build_card(str(run), str(cards), name="../../evil")
    (run / "x").mkdir()
    path = build_card(str(run / "x" / ".."), str(cards))  # a run dir whose name is '..'
    assert os.path.dirname(os.path.abspath(path)) == str(cards)
    assert sorted(p.name for p in (tmp_path / "deep").iterdir()) == ["cards"]
    assert card_name("/r/..", "p") == "run" and card_name("/r/my run", "p") == "my_run"


# ------------------------------------------------------------------ 5. card escaping
HOSTILE = ["<img src=x onerror=alert(1)>", "<script>alert(2)<\\script>", "a|b|c", "`tick` ``two``",
           "[click](javascript:alert(3))", "line1\nline2", "- list", "_em_ *strong*"]


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def _render(md: str) -> _Tags:
    from markdown_it import MarkdownIt

    html = MarkdownIt("commonmark", {"html": True}).enable("table").render(md)
    tags = _Tags()
    tags.feed(html)
    return tags


def test_escape_helpers_render_hostile_strings_literally():
    from curate.card.escape import code, md

    for s in HOSTILE:
        for cell in (md(s), code(s)):
            doc = _render(f"| h |\n|---|\n| {cell} |\n")
            assert [t for t, _ in doc.tags] == ["table", "thead", "tr", "th", "tbody", "tr", "td"] + \
                (["code"] if cell.startswith("`") else []), (s, cell)
            assert " ".join(s.splitlines()) in "".join(doc.text), (s, cell)
        assert not [t for t, _ in _render(md(s)).tags if t not in ("p",)], s


def test_card_escapes_labels_paths_and_description(tmp_path):
    import numpy as np
    from PIL import Image

    root = tmp_path / "<script>alert(0)"
    rng = np.random.default_rng(0)
    for i, label in enumerate(HOSTILE):
        d = root / label
        d.mkdir(parents=True)
        for j in range(2):
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(d / f"{j}.png")
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump({"name": "hostile", "description": "<img src=y onerror=alert(9)> | `x` [a](javascript:b)",
                                 "stages": [{"stage": "ingest", "sources": [{"type": "folder", "path": str(root)}]}]}))
    cards = tmp_path / "cards"
    r = CliRunner().invoke(app, ["run", str(p), "--run-dir", str(tmp_path / "hostile"), "--scheduler", "sync",
                                 "--quiet", "--card-dir", str(cards)])
    assert r.exit_code == 0, r.output
    md = (cards / "hostile.md").read_text()
    doc = _render(md.split("---", 2)[2])
    names = {t for t, _ in doc.tags}
    assert "script" not in names
    for tag, attrs in doc.tags:
        assert not any(k.startswith("on") for k in attrs), (tag, attrs)
        assert not str(attrs.get("href", "")).startswith("javascript"), attrs
        if tag == "img":
            assert attrs["src"].startswith("hostile/") and attrs["src"].endswith(".png")
    text = "".join(doc.text)
    for label in HOSTILE:
        assert " ".join(label.splitlines()) in text
    assert "<img src=y onerror=alert(9)>" in text
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    for line in rows:  # every table row keeps its column count
        assert "\n" not in line


# ------------------------------------------------ 1. nothing from a run dir is unpickled
class _Payload:
    """Unpickling this runs code: it writes ``marker``."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def _plant(path, marker, how: str = "pickle") -> str:
    import pickle

    import torch

    obj = {"state_dict": {"w": _Payload(str(marker))}, "unet": _Payload(str(marker))}
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    if how == "torch":
        torch.save(obj, str(path))
    else:
        with open(path, "wb") as f:
            pickle.dump(obj, f)
    return str(path)


def test_the_payload_really_runs_when_unpickled(tmp_path):
    import pickle

    marker = tmp_path / "marker"
    with open(_plant(tmp_path / "x.pkl", marker), "rb") as f:
        pickle.load(f)
    assert marker.exists()


@pytest.mark.parametrize("how", ["pickle", "torch"])
@pytest.mark.parametrize("encoder", ["resnet18", "resnet50", "ssl", "onnx"])
def test_embed_weights_are_never_unpickled(tmp_path, encoder, how):
    from curate import encoders
    from curate.encoders.base import EncoderOptions

    marker = tmp_path / "marker"
    ext = {"onnx": ".onnx", "ssl": ".safetensors"}.get(encoder, ".pt")
    path = _plant(tmp_path / f"evil{ext}", marker, how)
    with pytest.raises(ConfigError):
        if encoder == "onnx":
            encoders.build(f"onnx:{path}", EncoderOptions())
        else:
            encoders.build(encoder, EncoderOptions(weights=path))
    assert not marker.exists()


@pytest.mark.parametrize("how", ["pickle", "torch"])
def test_shared_state_dict_loader_refuses_pickle(tmp_path, how):
    """``timm:`` and ``open_clip:`` read their checkpoints with this loader too."""
    from curate.encoders.base import load_state_dict

    marker = tmp_path / "marker"
    for name in ("evil.pt", "evil.bin", "evil.safetensors"):
        with pytest.raises(ConfigError):
            load_state_dict(_plant(tmp_path / name, marker, how))
    assert not marker.exists()


def _unet_dir(root, marker) -> str:
    import json

    from curate.stages.inflate.train import build_unet

    unet = build_unet(16, 1, (16, 32), 1, False, None)
    (root / "unet").mkdir(parents=True)
    (root / "unet" / "config.json").write_text(json.dumps(dict(unet.config)))
    _plant(root / "unet" / "diffusion_pytorch_model.bin", marker, "torch")
    return str(root)


def test_inflate_load_refuses_pickled_unet_weights(tmp_path):
    from curate.config import build_specs
    from curate.stages.inflate.train import load_unet

    marker = tmp_path / "marker"
    pipe = _unet_dir(tmp_path / "pipe", marker)
    with pytest.raises(ConfigError, match="never loaded"):
        load_unet(pipe)
    with pytest.raises(ConfigError, match="never loaded"):
        build_specs([{"stage": "inflate.load", "path": pipe}])
    assert not marker.exists()


def test_inflate_train_resume_ignores_a_planted_pickle_checkpoint(tmp_path):
    import json

    import numpy as np

    from curate.stages.inflate.train import train_diffusion

    marker = tmp_path / "marker"
    ck = tmp_path / "out" / "checkpoints" / "step-00000001"
    _plant(ck / "state.pt", marker, "torch")
    (ck / "state.json").write_text(json.dumps({"step": 1, "fingerprint": "f"}))
    x = np.random.default_rng(0).integers(0, 256, (8, 1, 16, 16), dtype=np.uint8)
    stats = train_diffusion(x, None, tmp_path / "out", steps=2, batch_size=4, block_out_channels=(16, 32),
                            layers_per_block=1, attention=False, progress=False, fingerprint="f", checkpoint_every=1)
    assert stats["train_steps"] == 2 and not marker.exists()
    saved = tmp_path / "out" / "checkpoints" / "step-00000001"
    assert (saved / "train_state.safetensors").is_file() and not (saved / "state.pt").exists()
    more = train_diffusion(x, None, tmp_path / "out", steps=3, batch_size=4, block_out_channels=(16, 32),
                           layers_per_block=1, attention=False, progress=False, fingerprint="f", checkpoint_every=1)
    assert more["losses"][:1] == stats["losses"][:1] or more["train_steps"] == 3


def test_train_encoder_resume_and_ssl_load_refuse_pickle(tmp_path):
    import numpy as np

    from curate.train.simclr import load_encoder, train

    marker = tmp_path / "marker"
    evil = _plant(tmp_path / "ssl.safetensors", marker, "torch")
    x = np.random.default_rng(0).integers(0, 256, (8, 1, 16, 16), dtype=np.uint8)
    with pytest.raises(ConfigError):
        train(x, {"steps": 2, "batch_size": 4, "arch": "resnet_nano"}, resume=evil, progress=False)
    with pytest.raises(ConfigError):
        load_encoder(evil)
    assert not marker.exists()


def test_eval_probe_and_npz_sources_refuse_pickled_arrays(tmp_path):
    import numpy as np

    from curate.eval.data import load_probe

    marker = tmp_path / "marker"
    evil = tmp_path / "probe.npz"
    np.savez(evil, train_images=np.array([_Payload(str(marker))], dtype=object),
             train_labels=np.zeros(1), test_images=np.zeros((1, 8, 8)), test_labels=np.zeros(1))
    raw = _plant(tmp_path / "raw.npz", marker)
    for path in (str(evil), raw):
        with pytest.raises(ConfigError):
            load_probe(path)
    assert not marker.exists()


def _kw(call, name):
    import ast

    return next((k.value.value for k in call.keywords if k.arg == name and isinstance(k.value, ast.Constant)), None)


def test_no_unsafe_loader_in_the_code():
    """Guard over curate/: torch.load(weights_only=True), np.load(allow_pickle=False),
    from_pretrained(use_safetensors=True), no pickle / dill / joblib / shelve / marshal / yaml.load."""
    import ast

    bad = []
    for d, _, files in os.walk(os.path.join(REPO, "curate")):
        for f in sorted(files):
            if not f.endswith(".py"):
                continue
            tree = ast.parse(open(os.path.join(d, f)).read())
            for node in ast.walk(tree):
                where = f"{f}:{getattr(node, 'lineno', 0)}"
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                    bad += [f"{where} import {m}" for m in mods
                            if m.split(".")[0] in ("pickle", "dill", "joblib", "shelve", "marshal", "cloudpickle")]
                if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                    continue
                owner = node.func.value.id if isinstance(node.func.value, ast.Name) else ""
                attr = node.func.attr
                if owner == "torch" and attr == "load" and _kw(node, "weights_only") is not True:
                    bad.append(f"{where} torch.load without weights_only=True")
                if owner in ("np", "numpy") and attr == "load" and _kw(node, "allow_pickle") is not False:
                    bad.append(f"{where} np.load without allow_pickle=False")
                if attr == "from_pretrained" and _kw(node, "use_safetensors") is not True:
                    bad.append(f"{where} from_pretrained without use_safetensors=True")
                if owner == "yaml" and attr in ("load", "unsafe_load", "full_load", "load_all"):
                    bad.append(f"{where} yaml.{attr}")
    assert not bad, bad


# ------------------------------------------------------------- 4. identifiers in paths
PHI = "PID-123_Doe^Jane"


def _phi_dicom(root):
    import pydicom
    from pydicom.data import get_testdata_file

    d = root / "dicom" / PHI
    d.mkdir(parents=True)
    for i, z in enumerate([0.0, 5.0]):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.PatientName, ds.PatientID = "Doe^Jane", "PID-123"
        ds.ImagePositionPatient = [0.0, 0.0, z]
        ds.save_as(d / f"{PHI}_{i}.dcm")
    (d / f"{PHI}_broken.dcm").write_bytes(b"DICM not really")
    return root / "dicom"


def _run_phi(tmp_path, name, env=None):
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump({"name": name, "stages": [
        {"stage": "ingest", "sources": [{"type": "dicom", "path": str(tmp_path / "dicom"), "window": "minmax"}]},
        {"stage": "dedup.exact"}, {"stage": "dedup.apply"}, {"stage": "shard"}]}))
    proc = subprocess.run([sys.executable, "-m", "curate", "run", str(p), "--run-dir", str(tmp_path / name),
                           "--scheduler", "sync", "--card-dir", str(tmp_path / "cards")], cwd=REPO,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": REPO, **(env or {})})
    assert proc.returncode == 0, proc.stderr
    return proc


def test_planted_identifier_never_reaches_shards_cards_summary_or_output(tmp_path):
    import pyarrow.parquet as pq

    _phi_dicom(tmp_path)
    proc = _run_phi(tmp_path, "phi")
    run = tmp_path / "phi"
    for needle in (PHI, "Doe^Jane", "PID-123", "Doe"):
        assert needle not in proc.stdout + proc.stderr
        for f in [*run.rglob("summary.json"), *run.rglob("pipeline.json"), *(tmp_path / "cards").rglob("*.md")]:
            assert needle not in f.read_text(), f
        for f in [p for p in run.rglob("*.parquet") if "secrets" not in p.parts]:
            t = pq.read_table(f)
            for col in t.column_names:
                if t.schema.field(col).type in (__import__("pyarrow").string(), __import__("pyarrow").large_string()):
                    assert not any(needle in (v or "") for v in t.column(col).to_pylist()), (f, col)
    # the map back to the paths is in the run dir's secrets, private to the owner
    maps = list((run / "secrets").glob("00_ingest-paths/part-*.json"))
    assert maps and any(PHI in m.read_text() for m in maps)
    salt = run / "secrets" / "salt"
    assert (salt.stat().st_mode & 0o777) == 0o600
    card = (tmp_path / "cards" / "phi.md").read_text()
    assert "per\\-run random" in card or "per-run random" in card
    assert "**yes** (dicom)" in card and salt.read_text() not in card


def test_salt_is_per_run_unless_a_project_secret_is_given(tmp_path):
    from tests.conftest import read_run_table

    _phi_dicom(tmp_path)

    def groups(name, env=None):
        _run_phi(tmp_path, name, env)
        t = read_run_table(tmp_path / name, "00_ingest")
        return sorted(set(t.column("group_id").to_pylist())), sorted(t.column("source_uri").to_pylist())

    a, b = groups("a"), groups("b")
    assert a != b  # a random salt per run dir: no membership test across runs
    s1, s2 = groups("s1", {"CURATE_SECRET": "correct horse battery"}), groups("s2", {"CURATE_SECRET": "correct horse battery"})
    assert s1 == s2 and s1 != a
    card = (tmp_path / "cards" / "s2.md").read_text()
    assert "project secret" in card and "correct horse" not in card


# ------------------------------------- 1. no unpickling loader anywhere: package, tests, benchmarks
_PICKLE_MODULES = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib"}
# the one place that unpickles on purpose: it proves the planted payload is live, in a tmp dir
_UNPICKLE_ALLOWED = {("tests/adversarial/test_security.py", "test_the_payload_really_runs_when_unpickled")}


def _unsafe_loads(source: str) -> list[tuple[int, str, str]]:
    """(line, enclosing function, problem) for each unpickling load in ``source``: ``pickle.load(s)`` and the
    like (dill, cloudpickle, joblib, ``Unpickler``, ``pd.read_pickle``, ``shelve.open``), ``from pickle import
    load``, ``torch.load`` without ``weights_only=True``, ``np.load`` with ``allow_pickle`` other than False."""
    import ast

    found: list[tuple[int, str, str]] = []

    class Visitor(ast.NodeVisitor):
        func = "<module>"

        def visit_FunctionDef(self, node):
            outer, self.func = self.func, node.name
            self.generic_visit(node)
            self.func = outer

        visit_AsyncFunctionDef = visit_FunctionDef

        def visit_ImportFrom(self, node):
            if (node.module or "").split(".")[0] in _PICKLE_MODULES:
                for a in node.names:
                    if a.name in ("load", "loads", "Unpickler", "*"):
                        found.append((node.lineno, self.func, f"from {node.module} import {a.name}"))

        def visit_Call(self, node):
            f = node.func
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
                owner, attr = f.value.id, f.attr
                if owner in _PICKLE_MODULES and attr in ("load", "loads", "Unpickler"):
                    found.append((node.lineno, self.func, f"{owner}.{attr}"))
                if owner in ("pd", "pandas") and attr == "read_pickle":
                    found.append((node.lineno, self.func, f"{owner}.read_pickle"))
                if owner == "shelve" and attr == "open":
                    found.append((node.lineno, self.func, "shelve.open"))
                if owner == "torch" and attr == "load":
                    kw = {k.arg: k.value for k in node.keywords}
                    ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                    if not ok:
                        found.append((node.lineno, self.func, "torch.load without weights_only=True"))
                if owner in ("np", "numpy") and attr == "load":
                    kw = {k.arg: k.value for k in node.keywords}
                    v = kw.get("allow_pickle")
                    if v is not None and not (isinstance(v, ast.Constant) and v.value is False):
                        found.append((node.lineno, self.func, "np.load with allow_pickle"))
            self.generic_visit(node)

    Visitor().visit(ast.parse(source))
    return found


def test_unsafe_load_guard_catches_every_form():
    snippet = ("import pickle, torch, numpy as np, pandas as pd, dill, joblib\nfrom pickle import loads\n"
               "def f(p):\n    pickle.load(p); pickle.loads(b''); pickle.Unpickler(p).load(); dill.load(p)\n"
               "    joblib.load(p); pd.read_pickle(p); torch.load(p); torch.load(p, weights_only=False)\n"
               "    np.load(p, allow_pickle=True); np.load(p, allow_pickle=flag)\n"
               "    torch.load(p, weights_only=True); np.load(p); np.load(p, allow_pickle=False)\n"
               "    s = 'pickle.load(f)'  # text, not a call\n")
    found = _unsafe_loads(snippet)
    assert [p for _, _, p in found] == [
        "from pickle import loads", "pickle.load", "pickle.loads", "pickle.Unpickler", "dill.load", "joblib.load",
        "pd.read_pickle", "torch.load without weights_only=True", "torch.load without weights_only=True",
        "np.load with allow_pickle", "np.load with allow_pickle"]
    assert {fn for _, fn, _ in found} == {"<module>", "f"}


def test_nothing_in_package_tests_or_benchmarks_unpickles():
    bad, allowed_seen = [], set()
    for top in ("curate", "tests", "benchmarks"):
        for d, _, files in os.walk(os.path.join(REPO, top)):
            for f in sorted(files):
                if not f.endswith(".py"):
                    continue
                rel = os.path.relpath(os.path.join(d, f), REPO)
                with open(os.path.join(d, f)) as fh:
                    for line, func, problem in _unsafe_loads(fh.read()):
                        if (rel, func) in _UNPICKLE_ALLOWED:
                            allowed_seen.add((rel, func))
                        else:
                            bad.append(f"{rel}:{line} ({func}): {problem}")
    assert not bad, "unpickling loads found (use parquet / npz / json, weights_only=True or safetensors):\n" + \
        "\n".join(bad)
    assert allowed_seen == _UNPICKLE_ALLOWED  # the allow-list names a real, still-existing use
