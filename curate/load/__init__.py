"""Streaming PyTorch loader over the shards written by the ``shard`` stage.

    from curate.load import ShardDataset, ShardLoader, SimCLRAugment
    ds = ShardDataset("runs/demo/06_shard/shards/index.json", rank=rank, world_size=world, seed=0)
    loader = ShardLoader(ds, batch_size=256, num_workers=4)     # batches already on the device
    aug = SimCLRAugment(32)                                      # or SimCLRAugment.weak(32) (AdaInf)
    for batch in loader:
        x = batch["image"].float() / 255
        v1, v2 = aug(x), aug(x)
"""

from curate.load.augment import SimCLRAugment
from curate.load.dataset import ShardDataset
from curate.load.index import ShardIntegrityError, read_index
from curate.load.loader import ShardLoader, collate, to_device

__all__ = ["ShardDataset", "ShardLoader", "SimCLRAugment", "ShardIntegrityError", "collate", "read_index", "to_device"]
