import json

import pytest

from curate.config import PipelineConfig
from curate.errors import ConfigError
from curate.runner import run_pipeline
from curate.stages.inflate.train import generator_id_of, load_unet, train_diffusion
from tests.conftest import idx_pipeline, read_run_table
from tests.stages.inflate.conftest import TINY_UNET, squares


def test_tiny_unet_loss_drops_and_checkpoint_resumes(tmp_path):
    x, y = squares()
    kw = dict(batch_size=12, lr=3e-3, warmup_steps=0, block_out_channels=(16, 32), layers_per_block=1,
              attention=False, progress=False, log_every=4, fingerprint="f")
    stats = train_diffusion(x[:, None], y, tmp_path, steps=16, checkpoint_every=12, **kw)
    losses = stats["losses"]
    assert len(losses) == 4
    assert losses[-1] < 0.6 * losses[0]
    assert (tmp_path / "pipeline" / "model_index.json").is_file()
    assert (tmp_path / "checkpoints" / "step-00000012" / "train_state.safetensors").is_file()
    assert not list(tmp_path.rglob("*.pt"))  # no pickle anywhere
    unet, sched, meta = load_unet(tmp_path / "pipeline")
    assert unet.config.num_class_embeds == 2 and unet.config.sample_size == 16
    assert meta["n_train"] == 48
    # a longer run with the same fingerprint resumes from the step-12 checkpoint: its first 3 logged
    # losses are the ones already recorded
    more = train_diffusion(x[:, None], y, tmp_path, steps=17, checkpoint_every=12, **kw)
    assert more["losses"][:3] == losses[:3]


def test_inflate_train_stage_writes_generator_row_and_keeps_samples(tmp_path, squares_idx):
    img, lab, x, _ = squares_idx
    cfg = idx_pipeline(img, lab, partition_size=20)
    cfg["stages"].append({"stage": "inflate.train", "steps": 3, "batch_size": 8, "checkpoint_every": 0,
                          "progress": False, **TINY_UNET})
    summary = run_pipeline(PipelineConfig(**cfg), run_dir=str(tmp_path / "run"), scheduler="sync", progress=False)
    gen = read_run_table(tmp_path / "run", "01_inflate_train")
    assert gen.num_rows == 1
    row = gen.to_pylist()[0]
    assert row["kind"] == "trained" and row["image_size"] == 16 and row["channels"] == 1 and row["num_classes"] == 2
    assert row["generator_id"] == generator_id_of(row["path"])
    assert json.loads(row["meta"])["n_train"] == 48
    a = summary["accounting"]
    assert a["kept"] == 48 and a["balanced"] and a["synthetic_added"] == 0


def test_inflate_load_missing_path_is_a_config_error(tmp_path, squares_idx, tiny_pipeline_dir):
    img, lab, _, _ = squares_idx
    cfg = idx_pipeline(img, lab)
    cfg["stages"].append({"stage": "inflate.load", "path": str(tmp_path / "nope")})
    with pytest.raises(ConfigError, match="does not exist"):
        PipelineConfig(**cfg).specs()
    cfg["stages"][-1]["path"] = str(tiny_pipeline_dir)
    run_pipeline(PipelineConfig(**cfg), run_dir=str(tmp_path / "run"), scheduler="sync", progress=False)
    row = read_run_table(tmp_path / "run", "01_inflate_load").to_pylist()[0]
    assert row["kind"] == "loaded" and row["path"] == str(tiny_pipeline_dir.resolve())


def test_bare_unet_directory_loads_with_default_ddpm_schedule(tmp_path, tiny_pipeline_dir):
    import shutil

    bare = tmp_path / "bare_unet"
    shutil.copytree(tiny_pipeline_dir / "unet", bare)
    unet, sched, meta = load_unet(bare)
    assert sched["num_train_timesteps"] == 1000 and meta == {}
    assert generator_id_of(bare) == generator_id_of(tiny_pipeline_dir)  # same weights, same id
    (bare / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    with pytest.raises(ConfigError, match="only UNet2DModel"):
        load_unet(bare)
