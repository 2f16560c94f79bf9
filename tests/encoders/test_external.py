"""timm:, open_clip: and hf: encoders on tiny models the test builds and saves locally (nothing downloaded).

Each test builds a small model from a config, saves its weights with
safetensors to ``tmp_path``, loads them back through curate's real loading
code (``encoders.build``) and checks the embedding equals the model's own
output. ``HF_HUB_OFFLINE=1`` is set so any hub access would fail.
"""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest
import torch

from curate import encoders
from curate.encoders.base import EncoderOptions
from curate.errors import ConfigError


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def _need(module: str):
    """Import ``module`` or skip, saying why (timm and open_clip also need torchvision)."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        pytest.skip(f"optional package '{module}' unusable here: {type(err).__name__}: {err}")


def _save(sd: dict, path) -> str:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return str(path)


# ---------------------------------------------------------------------------------------------- transformers
def _tiny_dinov2(tmp_path, preprocessor: bool):
    transformers = _need("transformers")
    cfg = transformers.Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                    image_size=32, patch_size=8, num_channels=3)
    torch.manual_seed(0)
    model = transformers.Dinov2Model(cfg).eval()
    d = tmp_path / "dinov2-tiny"
    model.save_pretrained(str(d), safe_serialization=True)
    if preprocessor:
        (d / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5, 0.5, 0.5],
                                                                "image_std": [0.25, 0.25, 0.25]}))
    return model, d


def test_hf_dinov2_from_local_directory_matches_the_model(tmp_path):
    model, d = _tiny_dinov2(tmp_path, preprocessor=True)
    enc = encoders.build(f"hf:{d}")
    assert (enc.dim, enc.image_size, enc.channels) == (32, 32, 3)
    assert enc.mean == (0.5, 0.5, 0.5) and enc.std == (0.25, 0.25, 0.25)
    assert enc.id.startswith("hf:dinov2@") and len(enc.id.split("@")[1]) == 12
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        out = model(pixel_values=x)
        want = out.pooler_output if out.pooler_output is not None else out.last_hidden_state[:, 0]
        got = enc.forward(x)
    torch.testing.assert_close(got, want)
    assert not torch.allclose(got[0], got[1])  # real weights, distinct images -> distinct features
    # the digest follows the weights: another init gives another id
    torch.manual_seed(1)
    type(model)(model.config).save_pretrained(str(tmp_path / "other"), safe_serialization=True)
    assert encoders.build(f"hf:{tmp_path / 'other'}").id != enc.id


def test_hf_vit_uses_pooler_and_default_imagenet_stats(tmp_path):
    transformers = _need("transformers")
    cfg = transformers.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                 image_size=16, patch_size=4, num_channels=1)
    torch.manual_seed(0)
    model = transformers.ViTModel(cfg, add_pooling_layer=True).eval()
    model.save_pretrained(str(tmp_path / "vit"), safe_serialization=True)
    enc = encoders.build(f"hf:{tmp_path / 'vit'}", EncoderOptions(image_size=16))
    assert (enc.dim, enc.channels) == (32, 1)
    assert enc.mean == (float(np.mean((0.485, 0.456, 0.406))),)  # ImageNet stats, averaged for 1 channel
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(enc.forward(x), model(pixel_values=x).pooler_output)


def test_hf_refuses_missing_dirs_and_pickled_checkpoints(tmp_path):
    _need("transformers")
    with pytest.raises(ConfigError, match="not a local directory"):
        encoders.build(f"hf:{tmp_path / 'nope'}")
    model, d = _tiny_dinov2(tmp_path, preprocessor=False)
    (d / "model.safetensors").unlink()
    torch.save(model.state_dict(), d / "pytorch_model.bin")
    with pytest.raises(ConfigError, match="pickled .bin"):
        encoders.build(f"hf:{d}")


def test_hf_encoder_in_the_embed_stage(tmp_path):
    from curate.samples import samples_from_arrays
    from curate.stage import StageContext
    from curate.stages.embed import Embed, EmbedParams

    _, d = _tiny_dinov2(tmp_path, preprocessor=False)
    stage = Embed(EmbedParams(encoder=f"hf:{d}", batch_size=4))
    stage.setup()
    imgs = np.random.default_rng(0).integers(0, 255, (6, 20, 20), dtype=np.uint8)
    table = samples_from_arrays(imgs)
    ctx = StageContext(run_dir=str(tmp_path / "run"), stage="01_embed", stage_key="embed", partition_id="p0",
                       seed=0, on_error="raise")
    out = stage.process(table, ctx)
    emb = np.asarray(out.column("embedding").to_pylist(), np.float32)
    assert emb.shape == (6, 32)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    assert out.schema.metadata[b"encoder"].decode().startswith("hf:dinov2@")


# ---------------------------------------------------------------------------------------------- timm
def test_timm_local_safetensors_checkpoint(tmp_path):
    timm = _need("timm")
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=0).eval()
    path = _save(model.state_dict(), tmp_path / "r18.safetensors")
    enc = encoders.build("timm:resnet18", EncoderOptions(weights=path, image_size=32))
    assert enc.dim == 512 and enc.image_size == 32 and enc.id.startswith("timm:resnet18@")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(enc.forward(x), model(x))
    wrong = _save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "wrong.safetensors")
    with pytest.raises(ConfigError, match="lack"):
        encoders.build("timm:resnet18", EncoderOptions(weights=wrong))


# ---------------------------------------------------------------------------------------------- open_clip
def test_open_clip_local_safetensors_checkpoint(tmp_path, monkeypatch):
    open_clip = _need("open_clip")
    from open_clip import factory

    tiny = {"embed_dim": 16,
            "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
            "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1}}
    monkeypatch.setitem(factory._MODEL_CONFIGS, "curate-tiny", tiny)
    torch.manual_seed(0)
    model = open_clip.create_model("curate-tiny", pretrained=None).eval()
    path = _save(model.state_dict(), tmp_path / "clip.safetensors")
    enc = encoders.build("open_clip:curate-tiny", EncoderOptions(weights=path))
    assert (enc.dim, enc.image_size, enc.channels) == (16, 32, 3)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(enc.forward(x), model.encode_image(x))
