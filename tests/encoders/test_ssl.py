"""`encoder: ssl` end to end: ingest -> curate train-encoder -> embed with the trained checkpoint."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from curate.cli import app
from curate.config import PipelineConfig
from curate.encoders import EncoderOptions, build
from curate.errors import ConfigError
from curate.runner import run_pipeline


def _npz(path, n=24, size=12):
    rng = np.random.default_rng(0)
    imgs = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        y, x = rng.integers(2, size - 2, 2)
        imgs[i, y - 2:y + 2, x - 2:x + 2] = 200 + i
    np.savez(path, train_images=imgs, train_labels=np.arange(n) % 3)
    return str(path)


def test_ssl_encoder_end_to_end(tmp_path):
    src = _npz(tmp_path / "tiny.npz")
    run = str(tmp_path / "run")
    run_pipeline(PipelineConfig(name="t", stages=[{"stage": "ingest", "sources": [{"type": "npz", "path": src}]}]),
                 run_dir=run, scheduler="sync", progress=False)
    ck = str(tmp_path / "ssl.safetensors")
    res = CliRunner().invoke(app, ["train-encoder", run, "--out", ck, "--steps", "2", "--batch-size", "8",
                                   "--arch", "resnet_tiny", "--device", "cpu", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["samples"] == 24 and summary["steps"] == 2 and summary["checkpoint"] == ck
    assert summary["config"]["image_size"] == 12 and summary["config"]["in_channels"] == 1

    run_pipeline(PipelineConfig(name="t", stages=[
        {"stage": "ingest", "sources": [{"type": "npz", "path": src}]},
        {"stage": "embed", "encoder": "ssl", "weights": ck, "batch_size": 10, "device": "cpu"},
    ]), run_dir=run, scheduler="sync", progress=False)
    files = sorted((tmp_path / "run" / "01_embed").glob("part-*.parquet"))
    table = pq.read_table(files[0])
    emb = np.stack(table.column("embedding").to_numpy(zero_copy_only=False))
    assert emb.shape == (24, 256)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert table.schema.metadata[b"encoder"].decode().startswith("ssl-resnet_tiny@")

    # the embed stage's features are the trained trunk's features on [0, 1] pixels
    enc = build("ssl", EncoderOptions(weights=ck))
    assert (enc.dim, enc.image_size, enc.channels) == (256, 12, 1)
    auto = build("auto", EncoderOptions(weights=ck))  # encoder: auto reads the checkpoint's format
    assert auto.id == enc.id and auto.resolved_from == "auto"
    from curate.train import load_encoder
    trunk, _ = load_encoder(ck)
    x = torch.rand(3, 1, 12, 12)
    with torch.no_grad():
        assert torch.allclose(enc.forward(x), trunk(x), atol=1e-6)


def test_ssl_encoder_errors(tmp_path):
    with pytest.raises(ConfigError, match="weights"):
        build("ssl", EncoderOptions())
    with pytest.raises(ConfigError, match="not found"):
        build("ssl", EncoderOptions(weights=str(tmp_path / "nope.safetensors")))
    res = CliRunner().invoke(app, ["train-encoder", str(tmp_path / "norun"), "--steps", "1"])
    assert res.exit_code == 2 and "pipeline.json" in res.output
