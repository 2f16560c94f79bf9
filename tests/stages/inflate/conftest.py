"""Tiny real data for the inflate tests: 16x16 gray squares in two classes."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import write_idx

TINY_UNET = {"block_out_channels": [16, 32], "layers_per_block": 1, "attention": False}


def squares(n: int = 48, size: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class 0: a bright square on black; class 1: a dark square on white."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, size, size), np.uint8)
    y = np.arange(n) % 2
    for i in range(n):
        r, c = rng.integers(0, size // 2, 2)
        if y[i]:
            x[i] = 255
            x[i, r:r + size // 2, c:c + size // 2] = 0
        else:
            x[i, r:r + size // 2, c:c + size // 2] = 255
    return x, y


@pytest.fixture
def squares_idx(tmp_path):
    x, y = squares()
    img = write_idx(str(tmp_path / "sq-images-idx3-ubyte.gz"), x)
    lab = write_idx(str(tmp_path / "sq-labels-idx1-ubyte.gz"), y.astype(np.uint8))
    return img, lab, x, y


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory):
    """A class-conditional tiny DDPM pipeline directory trained for a few steps."""
    import torch

    from curate.stages.inflate.train import train_diffusion

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    x, y = squares()
    out = tmp_path_factory.mktemp("tiny_ddpm")
    train_diffusion(x[:, None], y, out, steps=8, batch_size=16, lr=2e-3, warmup_steps=0, checkpoint_every=0,
                    progress=False, block_out_channels=(16, 32), layers_per_block=1, attention=False)
    torch.set_num_threads(n)
    return out / "pipeline"
