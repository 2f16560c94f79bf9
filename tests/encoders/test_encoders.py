"""Encoder registry, torchvision-compatible ResNets, pixels PCA, random_cnn, optional extras."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from curate import encoders
from curate.encoders.base import EncoderOptions
from curate.encoders.resnet import resnet
from curate.errors import ConfigError


def test_resnet_state_dicts_match_torchvision_layout():
    # torchvision.models.resnet18(): 122 state_dict entries, 11,689,512 parameters; resnet50: 320 / 25,557,032
    for arch, entries, params in (("resnet18", 122, 11_689_512), ("resnet50", 320, 25_557_032)):
        m = resnet(arch)
        sd = m.state_dict()
        assert len(sd) == entries
        assert sum(p.numel() for p in m.parameters()) == params
        for k in ("conv1.weight", "bn1.running_mean", "bn1.num_batches_tracked", "layer1.0.conv1.weight",
                  "layer2.0.downsample.0.weight", "layer2.0.downsample.1.running_var", "layer4.1.bn2.bias",
                  "fc.weight", "fc.bias"):
            assert k in sd
    assert "layer1.0.conv3.weight" in resnet("resnet50").state_dict()


@pytest.fixture(scope="module")
def resnet18_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    m = resnet("resnet18").eval()
    with torch.no_grad():  # non-trivial BN statistics so a loading bug shows
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    d = tmp_path_factory.mktemp("ckpt")
    pt = d / "r18.pt"
    # wrapped + DataParallel prefix: both are unwrapped on load
    torch.save({"state_dict": {f"module.{k}": v for k, v in m.state_dict().items()}}, pt)
    from safetensors.torch import save_file

    st = d / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(st))
    return m, str(pt), str(st)


def test_resnet18_loads_checkpoint_pt_and_safetensors(resnet18_ckpt):
    ref, pt, st = resnet18_ckpt
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = ref.features(x)
    for path in (pt, st):
        enc = encoders.build("resnet18", EncoderOptions(weights=path, image_size=32))
        assert enc.dim == 512 and enc.image_size == 32 and enc.channels == 3
        assert enc.id.startswith("resnet18@")
        with torch.no_grad():
            torch.testing.assert_close(enc.forward(x), want)


def test_resnet_wrong_checkpoint_is_config_error(resnet18_ckpt, tmp_path):
    _, pt, _ = resnet18_ckpt
    with pytest.raises(ConfigError, match="tensor shapes|torchvision-style"):
        encoders.build("resnet50", EncoderOptions(weights=pt))
    bad = tmp_path / "bad.pt"
    torch.save({"encoder.w": torch.zeros(3)}, bad)
    with pytest.raises(ConfigError, match="missing"):
        encoders.build("resnet18", EncoderOptions(weights=str(bad)))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot read weights"):
        encoders.build("resnet18", EncoderOptions(weights=str(junk)))


def test_missing_weights_and_unknown_encoder_are_config_errors():
    with pytest.raises(ConfigError, match="needs a local checkpoint"):
        encoders.build("resnet18")
    with pytest.raises(ConfigError, match="Did you mean 'resnet18'"):
        encoders.build("resnet81")
    with pytest.raises(ConfigError, match="needs an argument"):
        encoders.build("timm")


@pytest.mark.parametrize("spec,module", [("timm:resnet18", "timm"), ("open_clip:ViT-B-32", "open_clip"),
                                         ("onnx:/nonexistent/model.onnx", "onnxruntime")])
def test_optional_encoders_say_what_to_install(spec, module, tmp_path):
    if importlib.util.find_spec(module) is not None:
        pytest.skip(f"{module} is installed")
    with pytest.raises(ConfigError, match="pip install"):
        encoders.build(spec, EncoderOptions(weights=str(tmp_path / "w.pt")))


def test_register_encoder_is_one_line():
    from curate.encoders.random_cnn import RandomCNNEncoder

    seen = {}

    def factory(arg, opts):
        seen["arg"] = arg
        return RandomCNNEncoder(opts)

    encoders.register_encoder("toy", factory)
    enc = encoders.build("toy:/some/ckpt.pt", EncoderOptions(image_size=16))
    assert seen["arg"] == "/some/ckpt.pt" and enc.dim == 256
    assert "toy" in encoders.names()


def test_random_cnn_is_seeded():
    x = torch.rand(3, 3, 32, 32)
    a = encoders.build("random_cnn", EncoderOptions(seed=1)).forward(x)
    b = encoders.build("random_cnn", EncoderOptions(seed=1)).forward(x)
    c = encoders.build("random_cnn", EncoderOptions(seed=2)).forward(x)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_pixels_pca_separates_near_duplicates():
    rng = np.random.default_rng(0)
    base = rng.random((40, 1, 16, 16), dtype=np.float32)
    enc = encoders.build("pixels", EncoderOptions(image_size=16, dim=8))
    enc.fit(base)
    assert enc.components == 8 and enc.needs_fit
    with torch.no_grad():
        y = torch.nn.functional.normalize(enc.forward(torch.from_numpy(base)), dim=1)
        y2 = torch.nn.functional.normalize(
            enc.forward(torch.from_numpy(base + rng.normal(0, 0.01, base.shape).astype(np.float32))), dim=1)
    same = (y * y2).sum(1)
    cross = y @ y.T - torch.eye(40) * 2
    assert same.min() > 0.97 and cross.max() < same.min()
    # the fitted state round-trips and fixes the id
    enc2 = encoders.build("pixels", EncoderOptions(image_size=16, dim=8))
    st = enc.state()
    enc2.set_state(st["A"], st["b"], int(st["components"]))
    assert enc2.id == enc.id


def test_pixels_small_fit_sample_pads_components():
    enc = encoders.build("pixels", EncoderOptions(image_size=8, dim=16))
    enc.fit(np.random.default_rng(0).random((5, 1, 8, 8), dtype=np.float32))
    assert enc.components == 4  # n - 1: the rest are zero rows
    assert np.all(enc.state()["A"][4:] == 0)


def test_onnx_encoder_runs_a_local_model(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    W = np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["f"], axis=1), helper.make_node("MatMul", ["f", "W"], ["y"])],
        "linear", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16])], [numpy_helper.from_array(W, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "lin.onnx"
    onnx.save(model, str(path))
    enc = encoders.build(f"onnx:{path}")
    assert (enc.dim, enc.channels, enc.image_size) == (16, 1, 8) and enc.id.startswith("onnx:lin.onnx@")
    x = torch.rand(3, 1, 8, 8)
    torch.testing.assert_close(enc.forward(x), torch.from_numpy(x.numpy().reshape(3, 64) @ W), rtol=1e-4, atol=1e-4)


def test_gradpix_features_see_edges_pixels_miss():
    """Same mean intensity, opposite edge polarity: gradpix tells them apart, raw pixels barely do."""
    from curate.encoders.gradpix import GradPixFeatures

    f = GradPixFeatures(1, 32)
    ramp = torch.linspace(0, 1, 32).repeat(32, 1)[None, None]
    x = torch.cat([ramp, ramp.flip(-1), ramp.transpose(-1, -2)])
    out = f(x)
    assert out.shape == (3, sum(f.widths())) == (3, 8 * 64 + 8 * 16 + 256)  # full-size pixels off by default
    assert GradPixFeatures(1, 32, (1.0, 1.0, 0.7, 0.7))(x).shape == (3, 8 * 64 + 8 * 16 + 1024 + 256)
    g = out[:, : 8 * 64].reshape(3, 8, 8, 8)  # fine cells: (bins, 8, 8)
    # a left-to-right ramp votes in the 0-rad bin, its mirror in the pi bin, the vertical ramp at pi/2
    assert g[0, 0, 3, 3] > 0 and g[0, 4, 3, 3] == 0
    assert g[1, 4, 3, 3] > 0 and g[1, 0, 3, 3] == 0
    assert g[2, 2, 3, 3] > 0 and g[2, 0, 3, 3] == 0


def test_gradpix_fit_is_deterministic_and_pads_components():
    rng = np.random.default_rng(0)
    x = rng.random((40, 1, 32, 32), dtype=np.float32)
    a, b = encoders.build("gradpix"), encoders.build("gradpix")
    a.fit(x)
    b.fit(x.copy())
    assert a.id == b.id and a.components == 39 and a.dim == 128
    with torch.no_grad():
        ya, yb = a.forward(torch.from_numpy(x)), b.forward(torch.from_numpy(x))
    assert torch.equal(ya, yb) and torch.all(ya[:, 39:] == 0)
    c = encoders.build("gradpix", EncoderOptions(dim=16, image_size=16, channels=3))
    c.fit(rng.random((30, 3, 16, 16), dtype=np.float32))
    assert c.forward(torch.rand(2, 3, 16, 16)).shape == (2, 16) and c.name == "gradpix-16px-c-pca16"
    with pytest.raises(ValueError, match="multiple of 8"):
        encoders.build("gradpix", EncoderOptions(image_size=28))


def test_auto_resolution(tmp_path, resnet18_ckpt):
    _, pt, st = resnet18_ckpt
    assert encoders.resolve_auto(None) == "gradpix"
    assert encoders.resolve_auto(pt) == encoders.resolve_auto(st) == "resnet18"
    torch.save(resnet("resnet50").state_dict(), tmp_path / "r50.pt")
    assert encoders.resolve_auto(str(tmp_path / "r50.pt")) == "resnet50"
    assert encoders.resolve_auto(str(tmp_path)) == f"hf:{tmp_path}"
    (tmp_path / "m.onnx").write_bytes(b"x")
    assert encoders.resolve_auto(str(tmp_path / "m.onnx")) == f"onnx:{tmp_path / 'm.onnx'}"
    torch.save({"head.weight": torch.zeros(2, 2)}, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="cannot tell the architecture"):
        encoders.resolve_auto(str(tmp_path / "other.pt"))
    enc = encoders.build("auto", EncoderOptions(weights=st, image_size=32))
    assert enc.id.startswith("resnet18@") and enc.resolved_from == "auto"
    assert encoders.build("auto").name == "gradpix-32px-g-pca128"
