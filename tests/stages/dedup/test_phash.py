"""dedup.phash: transformed copies and adjacent slices are found; unrelated images are kept."""

import imagehash
import numpy as np
import pytest
from PIL import Image

from curate.config import PipelineConfig
from curate.runner import run_pipeline
from tests.conftest import read_run_table
from tests.stages.dedup._hash_fixture import (brighter, cropped, ct_slice, jpeg95, mr_volume, resized, rows_for,
                                              smooth_field, write_partitions)


def run(tmp_path, parts, **params):
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = write_partitions(str(tmp_path / "parts"), parts)
    cfg = PipelineConfig(name="t", stages=[{"stage": "test.tables", "path": path},
                                           {"stage": "dedup.phash", **params}])
    run_pipeline(cfg, run_dir=str(tmp_path / "run"), scheduler="sync", progress=False)
    dec = read_run_table(tmp_path / "run", "01_dedup_phash").to_pylist()
    hashes = read_run_table(tmp_path / "run", "01_dedup_phash", "hashes").to_pylist()
    return {r["sample_id"]: r for r in dec}, {r["sample_id"]: r for r in hashes}


@pytest.fixture(scope="module")
def copies():
    ct = ct_slice()
    variants = [ct, jpeg95(ct), resized(ct), cropped(ct), brighter(ct)]
    unrelated = [smooth_field(s) for s in range(6)] + list(mr_volume()[[0, 5]])
    return variants, unrelated


@pytest.mark.parametrize("hash_", ["phash", "dhash"])
def test_transformed_copies_found_unrelated_kept(tmp_path, copies, hash_):
    variants, unrelated = copies
    p0 = rows_for(variants[:3] + unrelated[:4], uri="memory://a")
    p1 = rows_for(variants[3:] + unrelated[4:], uri="memory://b")
    dec, hashes = run(tmp_path, {"p0": p0, "p1": p1}, hash=hash_)
    orig = p0[0]["sample_id"]
    for row in p0[1:3] + p1[:2]:  # jpeg, resize, crop, brightness
        d = dec[row["sample_id"]]
        assert not d["keep"] and d["representative_id"] == orig, (hash_, d)
        assert d["method"] == hash_ and d["cluster_id"] == f"{hash_}:{orig}"
        dist = 64 - round(d["score"] * 64)
        assert f"hamming {dist}" in d["reason"]
    assert dec[orig]["keep"] and dec[orig]["reason"] == "representative of 4 near-duplicates"
    for row in p0[3:] + p1[2:]:
        assert dec[row["sample_id"]]["keep"] and dec[row["sample_id"]]["reason"] == "unique"
    # the hashes table holds imagehash's values
    img = Image.fromarray(variants[0])
    assert f"{hashes[orig]['phash']:016x}" == str(imagehash.phash(img))
    assert f"{hashes[orig]['dhash']:016x}" == str(imagehash.dhash(img))
    assert hashes[orig]["minhash"] is None


def test_adjacent_slices_per_group(tmp_path):
    vol = mr_volume()
    # the same volume under two patients: per_group keeps one per patient, global only one overall
    rows = rows_for(list(vol[:3]) + list(vol[:3]), group_id=["pa"] * 3 + ["pb"] * 3)
    rows += rows_for([smooth_field(9)], uri="memory://nogroup")  # null group_id: never compared
    rows += rows_for([smooth_field(9)], uri="memory://nogroup2")
    dec, _ = run(tmp_path / "g", {"p0": rows}, scope="per_group", threshold=10)
    kept = [r["sample_id"] for r in rows if dec[r["sample_id"]]["keep"]]
    assert kept == [rows[0]["sample_id"], rows[3]["sample_id"], rows[6]["sample_id"], rows[7]["sample_id"]]
    dec, _ = run(tmp_path / "all", {"p0": rows}, scope="global", threshold=10, verify=False, verify_geometry=False)
    kept = [r["sample_id"] for r in rows if dec[r["sample_id"]]["keep"]]
    assert kept == [rows[0]["sample_id"], rows[6]["sample_id"]]


def test_global_default_keeps_adjacent_slices_and_removes_their_copies(tmp_path):
    # issue 11: adjacent MR slices are within pHash distance 10 and the thumbnail test, but they are
    # distinct images; the geometric check (on by default in global scope) keeps them and still
    # removes the bit-identical copies filed under another patient
    vol = mr_volume()
    rows = rows_for(list(vol[:3]) + list(vol[:3]), group_id=["pa"] * 3 + ["pb"] * 3)
    dec, _ = run(tmp_path, {"p0": rows}, scope="global", threshold=10)
    kept = [r["sample_id"] for r in rows if dec[r["sample_id"]]["keep"]]
    assert kept == [r["sample_id"] for r in rows[:3]]
    for a, b in zip(rows[3:], rows[:3]):
        d = dec[a["sample_id"]]
        assert d["representative_id"] == b["sample_id"] and "alignment verified" in d["reason"]


def test_undecodable_image_is_quarantined_not_decided(tmp_path):
    rows = rows_for([smooth_field(1), smooth_field(2)])
    rows[1]["image"] = rows[1]["image"][:20]
    dec, hashes = run(tmp_path, {"p0": rows})
    bad = dec[rows[1]["sample_id"]]
    assert bad["keep"] and bad["reason"].startswith("no_hash")
    assert hashes[rows[1]["sample_id"]]["phash"] is None
    q = read_run_table(tmp_path / "run", "01_dedup_phash", "quarantine").to_pylist()
    assert [r["sample_id"] for r in q] == [rows[1]["sample_id"]] and q[0]["reason"] == "undecodable"


def test_default_thresholds():
    from curate.stages.dedup.phash import PHashDedup

    assert PHashDedup.Params().t == 6
    assert PHashDedup.Params(hash="dhash").t == 6
    assert PHashDedup.Params(hash="dhash", threshold=3).t == 3


def test_find_near_duplicates_greedy_and_thumbnail_check():
    from curate.stages.dedup.phash import find_near_duplicates

    base = np.uint64(0x0123456789ABCDEF)
    h = np.array([base, base ^ np.uint64(0b11111), base ^ np.uint64(0b1111111111), base, base], np.uint64)
    thumbs = np.zeros((5, 256), np.uint8)
    thumbs[4] = np.tile([0, 200], 128)  # same hash as row 0, different picture
    r = find_near_duplicates(h, 6, np.arange(5), thumbs=thumbs, max_diff=8.0)
    # 1 is 5 bits from 0 -> removed; 2 is 5 from 1 but 10 from 0 -> kept (no chaining);
    # 3 is identical -> removed; 4 has row 0's hash but another thumbnail -> kept
    assert r["keep"].tolist() == [True, False, True, False, True]
    assert r["rep"].tolist() == [0, 0, 2, 0, 4]
    assert r["cluster"][:4].tolist() == [0, 0, 0, 0] and r["cluster"][4] == 4
    r = find_near_duplicates(h, 6, np.arange(5))  # hash alone: row 4 is a copy of row 0
    assert r["keep"].tolist() == [True, False, True, False, False]


def test_border_crop_of_a_small_image_found_through_crop_views(tmp_path):
    """pHash moves 16 bits under a 1-px border trim of a 28-px image; the crop view catches it."""
    originals = [smooth_field(s, 28) for s in range(6)]
    crop = np.ascontiguousarray(originals[0][1:-1, 1:-1])
    rows = rows_for(originals + [crop])
    dec, _ = run(tmp_path / "views", {"p0": rows})
    d = dec[rows[-1]["sample_id"]]
    assert not d["keep"] and d["representative_id"] == rows[0]["sample_id"]
    assert "(crop view)" in d["reason"] and 64 - round(d["score"] * 64) <= 6
    assert all(dec[r["sample_id"]]["keep"] for r in rows[:-1])
    dec, _ = run(tmp_path / "no_views", {"p0": rows}, crop_views=[], spectral=False)
    assert dec[rows[-1]["sample_id"]]["keep"]  # the hash alone misses it


def test_many_identical_images_with_crop_views_stay_cheap(tmp_path):
    """500 blank frames share one hash and one view hash: the cross pairs are capped per value,
    and every frame but the first is still removed (by the main search)."""
    blank = [np.zeros((20, 20), np.uint8) for _ in range(500)]
    rows = rows_for(blank + [smooth_field(1, 20), np.zeros((6, 6), np.uint8)])  # + one too small for views
    dec, _ = run(tmp_path, {"p0": rows})
    kept = [r["sample_id"] for r in rows if dec[r["sample_id"]]["keep"]]
    assert kept == [rows[0]["sample_id"], rows[500]["sample_id"]]  # the 6x6 blank is a copy too
    assert all(dec[r["sample_id"]]["representative_id"] == rows[0]["sample_id"] for r in rows[1:500])


def test_shifted_rolled_and_rotated_copies_found_through_spectral_candidates(tmp_path):
    """A 3-px wrap-around shift, a 3-px one-sided crop and a 4-degree rotation of real photo tiles
    move pHash past t=6; the Fourier-magnitude candidates + geometric check remove them, and the
    distinct tiles (neighbouring tiles of the same photos) all stay."""
    import skimage.data as skd
    from scipy import ndimage

    import cv2

    tiles = [img[y:y + 64, x:x + 64] for img in (skd.camera(), skd.moon(), skd.coins()[:256, :256])
             for y in range(0, 256, 64) for x in range(0, 256, 64)]
    tiles = [cv2.resize(t, (32, 32), interpolation=cv2.INTER_AREA) for t in tiles if t.std() > 8][:24]
    copies = {"roll": np.roll(tiles[3], 3, axis=1), "shift": np.ascontiguousarray(tiles[7][3:]),
              "rotate": np.clip(ndimage.rotate(tiles[9].astype(np.float32), 4, reshape=False, order=1,
                                               mode="nearest") + 0.5, 0, 255).astype(np.uint8)}
    rows = rows_for(tiles + list(copies.values()))
    ids = [r["sample_id"] for r in rows]
    h = [imagehash.phash(Image.fromarray(x)) for x in tiles + list(copies.values())]
    assert min(h[-3] - h[3], h[-2] - h[7], h[-1] - h[9]) > 6  # the hash alone misses them
    dec, _ = run(tmp_path / "on", {"p0": rows})
    for k, (name, orig) in enumerate(zip(copies, (3, 7, 9))):
        d = dec[ids[len(tiles) + k]]
        assert not d["keep"], (name, d["reason"])
        assert d["representative_id"] == ids[orig] and "Fourier-magnitude" in d["reason"]
    assert all(dec[i]["keep"] for i in ids[:len(tiles)])
    dec, _ = run(tmp_path / "off", {"p0": rows}, spectral=False)
    assert all(dec[i]["keep"] for i in ids[len(tiles):])


def test_spectral_candidates_need_geometric_verification():
    from curate.stages.dedup.phash import PHashDedup

    with pytest.raises(ValueError, match="verify_geometry"):
        PHashDedup.Params(spectral=True, verify_geometry=False)
    assert not PHashDedup.Params(scope="per_group").spectral_on
    assert PHashDedup.Params().spectral_on
