import numpy as np

from curate.samples import samples_from_arrays
from curate.stages.shard import build_shard_table, write_shards


def make_shards(out_dir, n=60, max_rows=17, rg=5, synthetic_every=0, real_replication=1.0, pairs=None, seed=0):
    """n tiny 6x6 images whose top-left pixel encodes the label; shards of <= max_rows rows, row groups of rg."""
    rng = np.random.default_rng(seed)
    arrs = []
    for i in range(n):
        a = rng.integers(0, 255, (6, 6), dtype=np.uint8)
        a[0, 0] = i % 256
        arrs.append(a)
    syn = [bool(synthetic_every) and i % synthetic_every == 0 for i in range(n)]
    samples = samples_from_arrays(arrs, label=list(range(n)), group_id=[f"g{i // 4}" for i in range(n)],
                                  is_synthetic=syn)
    table = build_shard_table(samples, pairs, real_replication)
    index, placements = write_shards(table, str(out_dir), seed=seed, max_rows=max_rows, row_group_max_rows=rg)
    return samples, index, placements
