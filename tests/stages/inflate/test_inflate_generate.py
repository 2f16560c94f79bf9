import numpy as np
import pyarrow.compute as pc

from curate import imaging
from curate.config import PipelineConfig
from curate.ops.phash import hash_arrays
from curate.runner import run_pipeline
from curate.stages.embed import EmbedParams
from curate.encoders.embedder import Embedder
from curate.stages.inflate.generate import near_copy_filter, row_seed, sample_images
from tests.conftest import idx_pipeline, read_run_table


def test_sampling_is_seed_deterministic(tiny_pipeline_dir):
    seeds, labels = [row_seed(0, i) for i in range(5)], [0, 1, 0, 1, 1]
    a = sample_images(str(tiny_pipeline_dir), seeds, labels, steps=4, batch_size=5)
    b = sample_images(str(tiny_pipeline_dir), seeds, labels, steps=4, batch_size=2)
    assert a.shape == (5, 16, 16) and a.dtype == np.uint8
    assert np.array_equal(a, b)  # same seeds, any batching: the same images
    c = sample_images(str(tiny_pipeline_dir), seeds[:1], labels[:1], steps=4, sampler="ddpm")
    d = sample_images(str(tiny_pipeline_dir), seeds[:1], labels[:1], steps=4, sampler="ddpm")
    assert np.array_equal(c, d)
    e = sample_images(str(tiny_pipeline_dir), [row_seed(1, 0)], labels[:1], steps=4)
    assert not np.array_equal(a[:1], e)


def test_filter_rejects_planted_copies_with_partner():
    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, (40, 16, 16), dtype=np.uint8)
    gen = list(rng.integers(0, 256, (10, 16, 16), dtype=np.uint8))
    planted_exact = real[7].copy()
    near = real[11].copy()
    near[0, 0] = 255 - near[0, 0]  # one pixel changed: a near-copy
    gen = gen[:6] + [planted_exact] + gen[6:9] + [near] + [gen[2].copy()]  # last one repeats generated #2
    rid = [f"r{i}" for i in range(len(real))]
    gid = [f"g{i}" for i in range(len(gen))]
    rpix = [imaging.pixel_hash(a) for a in real]
    gpix = [imaging.pixel_hash(a) for a in gen]
    rph, _ = hash_arrays(list(real))
    gph, _ = hash_arrays(gen)
    emb = Embedder.from_params(EmbedParams(encoder="pixels", dim=8)).fit_images([imaging.encode_png(a) for a in real], 1)
    remb, gemb = emb([imaging.encode_png(a) for a in real]), emb([imaging.encode_png(a) for a in gen])
    keep, rows = near_copy_filter(gid, gpix, gph, gemb, rid, rpix, rph, remb, phash_t=2, tau=None)
    by_id = {r["sample_id"]: r for r in rows}
    assert by_id["g6"]["representative_id"] == "r7" and by_id["g6"]["reason"] == "memorised:exact"
    assert by_id["g10"]["reason"].startswith("memorised:phash")
    assert by_id["g10"]["representative_id"] in {rid[i] for i in np.nonzero(rph == rph[11])[0]}
    assert by_id["g11"]["reason"] == "redundant:exact" and by_id["g11"]["representative_id"] == "g2"
    assert not keep[6] and not keep[10] and not keep[11] and keep.sum() == len(gen) - len(rows)
    # cosine test alone also catches the exact copy (cosine 1 to its real partner)
    keep2, rows2 = near_copy_filter(gid, gpix, None, gemb, rid, ["x"] * len(rid), None, remb, None, tau=0.9999)
    assert any(r["sample_id"] == "g6" and r["reason"] == "memorised:cosine" for r in rows2)


def test_generate_stage_adds_synthetic_partitions_deterministically(tmp_path, squares_idx, tiny_pipeline_dir):
    img, lab, _, _ = squares_idx
    cfg = idx_pipeline(img, lab, partition_size=24)
    cfg["stages"] += [{"stage": "inflate.load", "path": str(tiny_pipeline_dir)},
                      {"stage": "inflate.generate", "n_images": 10, "images_per_partition": 4, "steps": 3,
                       "embed": {"encoder": "pixels", "dim": 8}}]
    s1 = run_pipeline(PipelineConfig(**cfg), run_dir=str(tmp_path / "a"), scheduler="sync", progress=False)
    s2 = run_pipeline(PipelineConfig(**cfg), run_dir=str(tmp_path / "b"), scheduler="sync", progress=False)
    assert s1["accounting"] == s2["accounting"] and s1["accounting"]["balanced"]
    t1 = read_run_table(tmp_path / "a", "02_inflate_generate")
    t2 = read_run_table(tmp_path / "b", "02_inflate_generate")
    syn = t1.filter(t1.column("is_synthetic"))
    rej = read_run_table(tmp_path / "a", "02_inflate_generate", "synthetic_rejections")
    assert syn.num_rows + rej.num_rows == 10
    assert t1.filter(pc.invert(t1.column("is_synthetic"))).num_rows == 48  # real rows pass through
    assert t1.column("sample_id").to_pylist() == t2.column("sample_id").to_pylist()  # reruns identical
    assert set(syn.column("label").to_pylist()) <= {0, 1} and syn.column("seed").null_count == 0
    assert all(g.startswith("ddpm-") for g in syn.column("generator").to_pylist())
    import os
    parts = sorted(f for f in os.listdir(tmp_path / "a" / "02_inflate_generate") if f.endswith(".parquet"))
    assert [p for p in parts if "syn-" in p] == ["part-syn-00000.parquet", "part-syn-00001.parquet",
                                                  "part-syn-00002.parquet"]
    a = s1["accounting"]
    assert a["kept"] == 48 and a["synthetic_added"] == syn.num_rows and a["balanced"]
    gen_stats = s1["stages"]["02_inflate_generate"]["counters"]
    assert gen_stats["generated"] == 10 and gen_stats["synthetic_added"] == syn.num_rows
    # resume: nothing recomputed
    s3 = run_pipeline(PipelineConfig(**cfg), run_dir=str(tmp_path / "a"), scheduler="sync", progress=False)
    assert s3["stages"]["02_inflate_generate"]["recomputed"] == 0


def test_inflate_embeds_with_the_embed_stages_fitted_encoder(tmp_path, squares_idx, tiny_pipeline_dir):
    """inflate.generate and inflate.adainf embed a real image exactly as the run's embed stage did: same
    encoder id, same PCA (fitted once, on embed's seeded sample), the same vector."""
    from curate.encoders.embedder import Embedder
    from curate.stage import StageContext, Upstream
    from curate.stages.inflate.generate import real_nn_stats

    img, lab, _, _ = squares_idx
    cfg = idx_pipeline(img, lab, partition_size=24)
    cfg["stages"] += [{"stage": "embed", "encoder": "pixels", "dim": 8, "fit_samples": 20},
                      {"stage": "inflate.load", "path": str(tiny_pipeline_dir)},
                      {"stage": "inflate.generate", "n_images": 6, "images_per_partition": 6, "steps": 2},
                      {"stage": "inflate.adainf", "mode": "gap"}]
    run = tmp_path / "run"
    summary = run_pipeline(PipelineConfig(**cfg), run_dir=str(run), scheduler="sync", progress=False)
    emb_t = read_run_table(run, "01_embed")
    stage_vec = np.asarray(emb_t.column("embedding").to_pylist(), np.float32)
    encoder_id = emb_t.schema.metadata[b"encoder"].decode()
    # the service as the inflate stages get it, from the run
    ctx = StageContext(run_dir=str(run), stage="03_inflate_generate", stage_key="inflate.generate",
                       partition_id=None, seed=0, on_error="raise",
                       upstream=(Upstream("00_ingest", ("samples",)), Upstream("01_embed", ("embeddings",))))
    emb = Embedder.for_stage(ctx, None, [], 1)
    assert emb.id == encoder_id
    samples = read_run_table(run, "00_ingest")
    assert samples.column("sample_id").to_pylist() == emb_t.column("sample_id").to_pylist()
    assert np.array_equal(emb(samples.column("image").to_pylist()), stage_vec)
    # explicit keys equal to embed's: the same shared state; other keys: its own fit
    same = EmbedParams(encoder="pixels", dim=8, fit_samples=20)
    assert Embedder.for_stage(ctx, same, [], 1).id == encoder_id
    other = Embedder.for_stage(ctx, EmbedParams(encoder="pixels", dim=4), samples.column("image").to_pylist(), 1)
    assert other.id != encoder_id
    # the stages used it: adainf names the encoder; generate's calibrated tau is that of embed's vectors
    assert read_run_table(run, "04_inflate_adainf").column("encoder").to_pylist() == [encoder_id]
    tau = float(min(1.0, np.quantile(real_nn_stats(None, stage_vec, seed=0)["cosine"], 0.99)))
    assert summary["stages"]["03_inflate_generate"]["counters"]["cosine_tau"] == round(tau, 6)
