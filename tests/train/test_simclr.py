import numpy as np
import pytest
import torch

from curate.errors import ConfigError
from curate.train import TensorBatches, load_encoder, train
from curate.train.data import NegativeBank


def tiny_images(n=32, size=16, channels=1, seed=0):
    """Distinct blobs and bars: easy to tell apart, so a few steps can learn something."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = np.zeros((n, channels, size, size), np.uint8)
    for i in range(n):
        cy, cx = rng.integers(3, size - 3, 2)
        r = 2 + i % 4
        blob = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) * 255
        if i % 2:
            blob = np.maximum(blob, (np.abs(xx - (i % size)) < 1 + i % 3) * 180)
        out[i] = blob.astype(np.uint8)
    return torch.from_numpy(out)


CFG = dict(arch="resnet_tiny", batch_size=16, lr=3e-3, temperature=0.5, warmup_steps=0, progress=False)


def test_a_few_cpu_steps_reduce_the_loss():
    imgs = tiny_images()
    res = train(imgs, steps=24, seed=0, **CFG)
    assert len(res.losses) == 24 and all(np.isfinite(res.losses))
    assert np.mean(res.losses[-6:]) < np.mean(res.losses[:6]) - 0.05, res.losses
    assert res.config.in_channels == 1 and res.config.image_size == 16
    assert res.stats["device"] == "cpu"


def test_training_is_seeded():
    imgs = tiny_images(16)
    a = train(imgs, steps=3, seed=3, **CFG).losses
    b = train(imgs, steps=3, seed=3, **CFG).losses
    c = train(imgs, steps=3, seed=4, **CFG).losses
    assert a == b and a != c


class _Stop(Exception):
    pass


@pytest.mark.parametrize("loss", ["ntxent", "dcl"])
def test_checkpoint_resume_gives_identical_next_step_loss(tmp_path, loss, monkeypatch):
    imgs = tiny_images(24, channels=3)
    kw = dict(CFG, loss=loss, batch_size=8, steps=5, seed=1, checkpoint_every=3)
    full = train(TensorBatches(imgs, 8, seed=1), **kw)  # uninterrupted 5 steps
    # the same run, killed right after writing its step-3 checkpoint
    import curate.train.simclr as simclr

    real_save = simclr.save_checkpoint

    def save_then_die(path, model, cfg, step, *a, **k):
        real_save(path, model, cfg, step, *a, **k)
        if step == 3:
            raise _Stop

    ck = str(tmp_path / "ck.safetensors")
    monkeypatch.setattr(simclr, "save_checkpoint", save_then_die)
    with pytest.raises(_Stop):
        train(TensorBatches(imgs, 8, seed=1), out=ck, **kw)
    monkeypatch.setattr(simclr, "save_checkpoint", real_save)
    resumed = train(TensorBatches(imgs, 8, seed=1), resume=ck, progress=False)
    assert resumed.stats["start_step"] == 3 and len(resumed.losses) == 2
    assert resumed.losses == full.losses[3:]  # identical next-step losses, bit for bit
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k  # and identical weights at the end


def test_load_encoder_and_errors(tmp_path):
    imgs = tiny_images(16)
    ck = str(tmp_path / "e.safetensors")
    res = train(imgs, steps=2, out=ck, **CFG)
    enc, meta = load_encoder(ck)
    x = imgs[:4].float() / 255
    with torch.no_grad():
        assert torch.allclose(enc(x), res.model.encoder(x), atol=1e-6)
    assert meta["image_size"] == "16" and meta["in_channels"] == "1" and meta["feature_dim"] == "256"
    with pytest.raises(ConfigError, match="not found"):
        load_encoder(str(tmp_path / "missing.safetensors"))
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="safetensors"):
        load_encoder(str(tmp_path / "junk.safetensors"))
    with pytest.raises(ConfigError, match="already at step"):
        train(imgs, resume=ck, progress=False)
    with pytest.raises(ConfigError, match="temperature"):
        train(imgs, steps=1, **dict(CFG, temperature=-1))


def test_sample_dicts_weights_hard_negatives_and_mochi():
    imgs = tiny_images(16)
    ids = [f"s{i}" for i in range(16)]
    samples = [{"image": imgs[i], "sample_weight": 1.0 + (i % 2), "sample_id": ids[i], "label": 0,
                "is_synthetic": False} for i in range(16)]
    bank = NegativeBank(imgs, ids, {ids[i]: [ids[(i + 1) % 16], ids[(i + 2) % 16]] for i in range(0, 16, 2)}, k=2)
    assert len(bank) == 8
    nimg, mask = bank.lookup(["s0", "s1"])
    assert nimg.shape == (2, 2, 1, 16, 16) and mask.tolist() == [[True, True], [False, False]]
    assert torch.equal(nimg[0, 0], imgs[1])
    res = train(samples, steps=3, hard_negatives=2, negatives=bank,
                mochi={"n_hard": 4, "s": 4, "s_prime": 2}, **dict(CFG, batch_size=8))
    assert len(res.losses) == 3 and all(np.isfinite(res.losses))


def test_train_from_shard_dataset_resumes_exactly(tmp_path):
    from curate.load.dataset import ShardDataset
    from tests.load._shards import make_shards

    _, index, _ = make_shards(tmp_path / "shards", n=40, real_replication=1.0)
    mk = lambda: ShardDataset(tmp_path / "shards", shuffle_buffer=8, seed=0)  # noqa: E731
    kw = dict(CFG, batch_size=8, steps=6, seed=0, checkpoint_every=4)
    full = train(mk(), **kw)  # 40 samples / 8 = 5 batches per epoch: crosses an epoch boundary
    ck = str(tmp_path / "ck.safetensors")
    import curate.train.simclr as simclr  # resume from the step-4 checkpoint of an identical run
    part = str(tmp_path / "p.safetensors")
    real = simclr.save_checkpoint
    try:
        simclr.save_checkpoint = lambda path, *a, **k: real(part, *a, **k) if a[2] == 4 else None
        train(mk(), out=ck, **kw)
    finally:
        simclr.save_checkpoint = real
    resumed = train(mk(), resume=part, progress=False)
    assert resumed.losses == full.losses[4:]


def test_weights_tuple_and_replicated_weights_not_double_counted():
    from curate.train.data import SampleBatches, as_batches

    imgs = tiny_images(16)
    w = torch.linspace(0.5, 2.0, 16)
    src = as_batches((imgs, w), 8, seed=0)
    b = next(iter(src))
    assert b["image"].shape == (8, 1, 16, 16) and not torch.all(b["sample_weight"] == 1)

    class Replicating(list):
        weighting = "replicate"

    items = Replicating({"image": imgs[i], "sample_weight": 3.0} for i in range(16))
    batch = next(iter(SampleBatches(items, 8)))
    assert torch.all(batch["sample_weight"] == 1.0)  # replication already applied the weight
    res = train((imgs, w), steps=2, **CFG)
    assert len(res.losses) == 2


def test_triplet_batches_from_shards_use_their_negative():
    imgs = tiny_images(16)
    items = [{"image": imgs[i], "negative_image": imgs[(i + 3) % 16], "has_negative": i % 4 != 0,
              "sample_weight": 1.0} for i in range(16)]
    from curate.train.data import SampleBatches

    b = next(iter(SampleBatches(items, 8)))
    assert b["negative_image"].shape == (8, 1, 16, 16) and b["has_negative"].tolist()[:2] == [False, True]
    with_neg = train(items, steps=2, hard_negatives=1, **dict(CFG, batch_size=8)).losses
    without = train(items, steps=2, **dict(CFG, batch_size=8)).losses
    assert with_neg[0] != without[0] and all(np.isfinite(with_neg))  # extra terms in the denominator
