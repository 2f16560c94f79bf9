"""``dedup.phash``: near-duplicate images by perceptual hash, Hamming distance <= t, exact search.

``map`` (per partition) decodes the canonical images and computes both 64-bit
hashes batched (:mod:`curate.ops.phash`, bit-identical to ``imagehash.phash`` /
``imagehash.dhash``) plus a 16x16 thumbnail; the hashes are written as the
``hashes`` table. ``reduce`` finds every pair within Hamming distance
``threshold`` of the chosen hash (:mod:`curate.ops.hamming`: multi-index
hashing, exact, fanned out as Dask tasks with ``ctx.map``). In ``global`` scope
each pair is then verified on the thumbnails (mean absolute difference after
removing the mean brightness <= ``max_diff``): on small images such as
Fashion-MNIST, distinct garments with the same silhouette are within 10 bits
of pHash, and this check takes precision from 0.46 to 0.99 at equal recall
(benchmarks/results/dedup_hash.md).

Geometric verification (``verify_geometry``, on in global scope): every pair that passed the hash
and thumbnail tests must also align under a mild warp with a noise-level residual
(:mod:`curate.ops.geometry`); the images are read and checked in tasks
(:mod:`curate.stages.dedup._images`). Adjacent CT / MR slices and near-blank tiles pass pHash at
distance <= 6 and the 16x16 thumbnail test, but not this one (benchmarks/verify_pairs.py).

Groups: union-find components of the verified pairs give ``cluster_id``;
removal is keep-first without chaining (imagededup's and SemDeDup's rule):
rows are walked in source order (``source_uri``, ``source_index``,
``sample_id``) and a row is removed when it is within the thresholds of an
already kept row - the closest one becomes its ``representative_id``, with
``score = 1 - d / 64`` and the distance ``d`` in ``reason``. So every removed
row is within ``t`` of the row it names, and a chain a~b~c keeps c when a and
c are far apart.

Default thresholds: ``6`` for both hashes. For dHash that is the per-CT-volume
reduction of "Less is More" (Fang et al.); for pHash, imagededup's default
(``max_distance_threshold=10``) was measured too loose even with the thumbnail
check (precision 0.968 on Fashion-MNIST + copies), while 6 meets precision
>= 0.98 with recall >= 0.96 on re-encoded, resized and brightened copies
(benchmarks/results/dedup_hash.md); ``threshold: 10`` restores imagededup's.

``scope: per_group`` compares rows only within
the same ``group_id`` (patient / series / volume) and, like Less is More, uses
the hash alone (adjacent slices differ more than re-encoded copies); a row
whose ``group_id`` is null has no group to compare within and is never removed
in that scope.

YAML::

    - stage: dedup.phash
      hash: phash          # phash | dhash
      threshold: null      # max Hamming distance; null = 6 (phash and dhash)
      scope: global        # global | per_group
      verify: null         # thumbnail check; null = on in global, off in per_group scope
      max_diff: 8.0        # max mean |thumbnail difference| (0..255) when verifying
      verify_geometry: null  # aligned-image check (curate.ops.geometry); null = on in global scope
      splits: 4            # Dask tasks per hash band in the all-pairs search
      crop_views: null     # border shares also hashed; null = [0.04, 0.08] in global scope, [] per_group

Crop views: pHash is not crop invariant (a 1-px border trim of a 28-px image is a 7 % zoom and
moves the hash by ~15 bits), so every image is also hashed with ``crop_views`` shares trimmed
from each side, and a row whose hash is within ``t`` of another row's view (verified on the
thumbnails) is a near-duplicate of it (reason "... (crop view)"). On Fashion-MNIST + copies this
takes recall on 1- and 2-px border crops from 0.02 to 1.0 at unchanged precision; one-sided crops
(shifts) are still missed (benchmarks/results/dedup_hash.md).
"""

from curate.stages.dedup.phash.candidates import candidate_edges
from curate.stages.dedup.phash.decide import find_near_duplicates
from curate.stages.dedup.phash.stage import DEFAULT_THRESHOLD, PHashDedup, PHashParams
from curate.stages.dedup.phash.verify import pair_diff, thumb_diff
from curate.stages.dedup.phash.views import (
           crop_view_hashes,
           crop_view_pairs,
           view_distance,
)

__all__ = ["DEFAULT_THRESHOLD", "PHashDedup", "PHashParams", "candidate_edges", "crop_view_hashes",
           "crop_view_pairs", "find_near_duplicates", "pair_diff", "thumb_diff", "view_distance"]
