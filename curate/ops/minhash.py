"""Vectorised MinHash signatures (identical to ``datasketch.MinHash``) and LSH banding.

MinHash (Broder, "On the resemblance and containment of documents", 1997):
``sig[k] = min over shingles s of perm_k(hash(s))``; the share of equal
signature entries estimates Jaccard similarity. We reproduce datasketch 2.x
exactly - same ``sha1_hash32`` of each shingle, same permutation parameters for
the same ``seed``/``num_perm`` (taken from datasketch itself), same arithmetic:

* ``affine32`` (datasketch's default since 2.0): ``h = fmix32(sha1_32(s))``,
  ``perm_k(h) = a_k * h + b_k mod 2^32``;
* ``legacy`` (datasketch < 2.0): ``((a_k * h + b_k) mod 2^64 mod (2^61 - 1)) & (2^32 - 1)``.

but hash all shingles of a batch of records at once and take the per-record
minima with one ``np.minimum.reduceat``, instead of one ``MinHash.update`` call
(and one numpy round trip) per shingle.

LSH banding (Indyk & Motwani 1998; Leskovec et al., *Mining of Massive
Datasets* ch. 3): the signature is cut into ``b`` bands of ``r`` rows; records
sharing any band's values become candidates. ``(b, r)`` default to datasketch's
``MinHashLSH`` optimum for the threshold (equal false-positive and
false-negative weights). Candidates are verified by their estimated Jaccard.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from functools import lru_cache

import numpy as np

_MERSENNE = np.uint64((1 << 61) - 1)
_MAX32 = np.uint64((1 << 32) - 1)
_FMIX32 = (np.uint32(16), np.uint32(0x85EBCA6B), np.uint32(13), np.uint32(0xC2B2AE35), np.uint32(16))
CHUNK_CELLS = 1 << 22  # shingles x num_perm cells per numpy step (16 MiB of uint32)
_NON_WORD = re.compile(r"[^\w]+", re.UNICODE)


def normalize(text: str) -> str:
    """NFKC, lower case, punctuation to spaces, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(_NON_WORD.sub(" ", text).split())


def shingles(text: str, ngram: int = 5, kind: str = "char") -> list[bytes]:
    """Distinct shingles of normalised ``text`` as UTF-8 bytes.

    ``kind="word"``: word ``ngram``-grams joined by one space; ``"char"``:
    character ``ngram``-grams of the normalised text (spaces included). A text
    shorter than one n-gram is a single shingle; an empty text has none.
    """
    norm = normalize(text)
    if not norm:
        return []
    if kind == "word":
        toks = norm.split(" ")
        grams = [" ".join(toks[i:i + ngram]) for i in range(max(1, len(toks) - ngram + 1))]
    elif kind == "char":
        grams = [norm[i:i + ngram] for i in range(max(1, len(norm) - ngram + 1))]
    else:
        raise ValueError(f"shingle kind must be 'word' or 'char', got {kind!r}")
    return [g.encode("utf-8") for g in dict.fromkeys(grams)]


def sha1_hash32(items: list[bytes]) -> np.ndarray:
    """datasketch.hashfunc.sha1_hash32 of many items: first 4 bytes of SHA-1, little endian."""
    if not items:
        return np.zeros(0, np.uint32)
    sha1 = hashlib.sha1
    return np.frombuffer(b"".join([sha1(s).digest()[:4] for s in items]), dtype="<u4").astype(np.uint32)


def _fmix32(h: np.ndarray) -> np.ndarray:
    s1, m1, s2, m2, s3 = _FMIX32
    h = h ^ (h >> s1)
    h = h * m1
    h = h ^ (h >> s2)
    h = h * m2
    return h ^ (h >> s3)


@lru_cache(maxsize=16)
def permutations(num_perm: int, seed: int, scheme: str) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's permutation parameters (a, b) for this seed / num_perm / scheme."""
    from datasketch import MinHash

    a, b = MinHash(num_perm=num_perm, seed=seed, scheme=scheme).permutations
    return np.array(a), np.array(b)


class MinHasher:
    """Signatures equal to ``datasketch.MinHash(num_perm, seed, scheme=...).update_batch(shingles)``."""

    def __init__(self, num_perm: int = 128, seed: int = 1, scheme: str = "affine32"):
        if scheme not in ("affine32", "legacy"):
            raise ValueError(f"scheme must be 'affine32' or 'legacy', got {scheme!r}")
        self.num_perm, self.seed, self.scheme = num_perm, seed, scheme
        self.a, self.b = permutations(num_perm, seed, scheme)
        self.empty = np.uint64((1 << 32) - 1)  # datasketch's value for "no shingle"

    def _permute(self, hv: np.ndarray) -> np.ndarray:
        """(S,) raw 32-bit hashes -> (num_perm, S) permuted values (uint32 or uint64)."""
        if self.scheme == "affine32":
            h = _fmix32(hv.astype(np.uint32))
            out = self.a[:, None] * h[None, :]
            out += self.b[:, None]
            return out
        h = hv.astype(np.uint64)
        return ((self.a[:, None] * h[None, :] + self.b[:, None]) % _MERSENNE) & _MAX32

    def signatures(self, shingle_lists: list[list[bytes]]) -> np.ndarray:
        """(N, num_perm) uint64 signatures; a record without shingles gets datasketch's empty value."""
        n = len(shingle_lists)
        out = np.full((n, self.num_perm), self.empty, dtype=np.uint64)
        lengths = np.array([len(s) for s in shingle_lists], dtype=np.int64)
        rows = np.flatnonzero(lengths)
        if rows.size == 0:
            return out
        flat = [s for i in rows.tolist() for s in shingle_lists[i]]
        # hash each distinct shingle once (n-grams repeat a lot across records)
        index: dict[bytes, int] = {}
        codes = np.fromiter((index.setdefault(s, len(index)) for s in flat), dtype=np.int64, count=len(flat))
        hv = sha1_hash32(list(index))[codes]
        lens = lengths[rows]
        ends = np.cumsum(lens)
        per_chunk = max(1, CHUNK_CELLS // self.num_perm)
        lo = 0
        while lo < rows.size:
            start = ends[lo] - lens[lo]
            hi = max(lo + 1, int(np.searchsorted(ends, start + per_chunk, side="right")))
            hi = min(hi, rows.size)
            stop = ends[hi - 1]
            phv = self._permute(hv[start:stop])
            offsets = (ends[lo:hi] - lens[lo:hi]) - start
            out[rows[lo:hi]] = np.minimum.reduceat(phv, offsets, axis=1).T
            lo = hi
        return out


def jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """Estimated Jaccard similarity of signature rows (share of equal entries)."""
    return (np.asarray(sig_a) == np.asarray(sig_b)).mean(axis=-1)


@lru_cache(maxsize=64)
def optimal_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """datasketch ``MinHashLSH``'s optimal (bands, rows) for a Jaccard threshold (weights 0.5 / 0.5)."""
    from datasketch.lsh import _optimal_param

    return tuple(int(x) for x in _optimal_param(threshold, num_perm, 0.5, 0.5))


def band_keys(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(N, bands) 64-bit keys: a mix of each band's ``rows`` signature values (collisions only add candidates)."""
    sigs = np.asarray(sigs, dtype=np.uint64)
    keys = np.empty((sigs.shape[0], bands), np.uint64)
    mult = np.uint64(0x9E3779B97F4A7C15)
    for bi in range(bands):
        h = np.full(sigs.shape[0], np.uint64(bi + 1) * np.uint64(0xC2B2AE3D27D4EB4F), np.uint64)
        for c in range(bi * rows, (bi + 1) * rows):
            h = (h ^ sigs[:, c]) * mult
            h ^= h >> np.uint64(29)
        keys[:, bi] = h
    return keys


def bucket_pairs(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row pairs (i < j) sharing a key in one band column ``keys`` (N,)."""
    keys = np.asarray(keys)
    if keys.size < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = np.argsort(keys, kind="stable")
    sk = keys[order]
    starts = np.flatnonzero(np.r_[True, sk[1:] != sk[:-1]])
    counts = np.diff(np.r_[starts, sk.size])
    multi = counts > 1
    starts, counts = starts[multi], counts[multi]
    if starts.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    sizes = counts * counts
    bp = np.repeat(np.arange(starts.size), sizes)
    local = np.arange(int(sizes.sum()), dtype=np.int64) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    c = counts[bp]
    li, lj = local // c, local % c
    keep = li < lj
    a = order[starts[bp[keep]] + li[keep]]
    b = order[starts[bp[keep]] + lj[keep]]
    return np.minimum(a, b).astype(np.int64), np.maximum(a, b).astype(np.int64)


def lsh_task(args: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Verified pairs from bands ``band_ids``: ``(i, j, jaccard)`` with jaccard >= threshold.

    A picklable unit of work for ``ctx.map``; the union over any split of the bands is the same.
    """
    sigs, band_ids, rows, threshold = args
    out_i, out_j = [], []
    for bi in band_ids:
        keys = band_keys(sigs[:, bi * rows:(bi + 1) * rows], 1, rows)[:, 0]
        i, j = bucket_pairs(keys)
        out_i.append(i)
        out_j.append(j)
    if not out_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    code = np.unique(np.concatenate(out_i) * sigs.shape[0] + np.concatenate(out_j))
    i, j = code // sigs.shape[0], code % sigs.shape[0]
    jac = jaccard(sigs[i], sigs[j]) if i.size else np.zeros(0)
    ok = jac >= threshold
    return i[ok], j[ok], jac[ok]


def lsh_candidates(args: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs (i < j, unique) of ``band_sigs`` (N, bands * rows): rows sharing any band.

    The unit of work ``dedup.minhash`` fans out with ``ctx.map``: each task gets only its bands'
    columns; the caller verifies candidates on the full signatures (:func:`verify_pairs`).
    """
    band_sigs, rows = args
    n = band_sigs.shape[0]
    out = []
    for b0 in range(0, band_sigs.shape[1] - rows + 1, rows):
        keys = band_keys(band_sigs[:, b0:b0 + rows], 1, rows)[:, 0]
        i, j = bucket_pairs(keys)
        out.append(i * n + j)
    if not out:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    code = np.unique(np.concatenate(out))
    return code // n, code % n


def verify_pairs(sigs: np.ndarray, i: np.ndarray, j: np.ndarray, threshold: float,
                 block: int = 1 << 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep candidate pairs whose estimated Jaccard is >= threshold (computed in blocks)."""
    jac = np.empty(i.size)
    for lo in range(0, i.size, block):
        jac[lo:lo + block] = jaccard(sigs[i[lo:lo + block]], sigs[j[lo:lo + block]])
    ok = jac >= threshold
    return i[ok], j[ok], jac[ok]
