"""CUDA path: bf16 autocast, channels_last, checkpoint portable to CPU (run with `pytest -m gpu`)."""

import numpy as np
import pytest
import torch

from curate.train import TrainConfig, load_encoder, train

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_cuda_bf16_training_and_cpu_loadable_checkpoint(tmp_path):
    imgs = torch.randint(0, 255, (64, 3, 32, 32), dtype=torch.uint8)
    ck = str(tmp_path / "g.safetensors")
    res = train(imgs, TrainConfig(arch="resnet18", steps=5, batch_size=32, device="cuda", mochi={"n_hard": 8, "s": 4,
                                                                                                   "s_prime": 2}),
                out=ck, progress=False)
    assert res.stats["device"].startswith("cuda") and np.isfinite(res.losses).all()
    enc, meta = load_encoder(ck, "cpu")
    assert meta["feature_dim"] == "512" and enc(torch.rand(2, 3, 32, 32)).shape == (2, 512)
    resumed = train(imgs, steps=6, resume=ck, progress=False)
    assert resumed.stats["start_step"] == 5 and len(resumed.losses) == 1
