"""curate.ops.minhash: signatures identical to datasketch; LSH finds near-duplicate texts."""

import numpy as np
import pytest
from datasketch import MinHash, MinHashLSH

from curate.ops import minhash as M

TEXTS = [
    "CT chest: 4 mm nodule in the right upper lobe. No effusion. Heart size normal.",
    "CT Chest - 4mm nodule in the right upper lobe; no effusion. Heart size normal",  # near-identical
    "MRI brain: no acute infarct, ventricles normal in size, no mass effect.",
    "",
    "ok",
]


@pytest.mark.parametrize("scheme", ["affine32", "legacy"])
@pytest.mark.parametrize("kind,n", [("char", 5), ("word", 3)])
def test_signatures_equal_datasketch(scheme, kind, n):
    sh = [M.shingles(t, n, kind) for t in TEXTS]
    sigs = M.MinHasher(64, seed=7, scheme=scheme).signatures(sh)
    for s, row in zip(sh, sigs):
        ref = MinHash(num_perm=64, seed=7, scheme=scheme)
        for x in s:
            ref.update(x)
        np.testing.assert_array_equal(ref.hashvalues.astype(np.uint64), row)


def test_chunked_signatures_equal_unchunked(monkeypatch):
    sh = [M.shingles(t) for t in TEXTS * 5]
    full = M.MinHasher(32).signatures(sh)
    monkeypatch.setattr(M, "CHUNK_CELLS", 32 * 7)
    np.testing.assert_array_equal(M.MinHasher(32).signatures(sh), full)


def test_shingles():
    assert M.normalize("  Hello,   World!! ") == "hello world"
    assert M.shingles("a b", 3, "word") == [b"a b"]
    assert M.shingles("a b c d", 3, "word") == [b"a b c", b"b c d"]
    assert M.shingles("...", 5) == []
    with pytest.raises(ValueError):
        M.shingles("x", 5, "syllable")


def test_optimal_bands_match_datasketch():
    lsh = MinHashLSH(threshold=0.8, num_perm=128)
    assert M.optimal_bands(0.8, 128) == (lsh.b, lsh.r)


def test_lsh_finds_near_duplicates_only():
    sh = [M.shingles(t) for t in TEXTS[:3]]
    sigs = M.MinHasher(128).signatures(sh)
    b, r = M.optimal_bands(0.8, 128)
    i, j, jac = M.lsh_task((sigs, list(range(b)), r, 0.8))
    assert list(zip(i.tolist(), j.tolist())) == [(0, 1)]
    assert jac[0] >= 0.8


def test_split_band_candidates_verified_equal_lsh_task():
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(300)]
    base = [" ".join(rng.choice(words, 40)) for _ in range(60)]
    texts = base + [t.replace(t.split()[5], "zz") for t in base[:20]]
    sigs = M.MinHasher(128).signatures([M.shingles(t) for t in texts])
    b, r = M.optimal_bands(0.8, 128)
    ref = M.lsh_task((sigs, list(range(b)), r, 0.8))
    parts = [M.lsh_candidates((sigs[:, g[0] * r:(g[-1] + 1) * r], r)) for g in np.array_split(np.arange(b), 3)]
    code = np.unique(np.concatenate([i * len(texts) + j for i, j in parts]))
    got = M.verify_pairs(sigs, code // len(texts), code % len(texts), 0.8, block=7)
    assert all(np.array_equal(x, y) for x, y in zip(ref, got))
    assert len(ref[0]) >= 18
