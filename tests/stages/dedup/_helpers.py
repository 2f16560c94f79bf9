"""Test-only stages for the dedup tests: an array source that can plant corrupt
images (so a later stage quarantines them) and a stage that plants decisions."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from curate import registry, schemas
from curate.config import StageParams
from curate.samples import sample_row, samples_table
from curate.stage import Partition, SourceStage, Stage


class ArraysParams(StageParams):
    path: str  # .npz with `images` (N, H, W[, 3]), optional `labels`, `groups`
    partition_size: int = 16
    corrupt: list[int] = []  # rows whose PNG bytes get truncated after ingest


class ArraysSource(SourceStage):
    key = "test.arrays"
    Params = ArraysParams
    outputs = ("samples",)

    def plan(self, ctx):
        n = len(np.load(self.params.path)["images"])
        step = self.params.partition_size
        return [Partition(f"p{i // step:04d}", (i, min(n, i + step))) for i in range(0, n, step)]

    def read(self, partition, ctx):
        z = np.load(self.params.path)
        a, b = partition.payload
        rows = []
        for i in range(a, b):
            row = sample_row(z["images"][i], "memory://arrays", i,
                             label=int(z["labels"][i]) if "labels" in z else None,
                             group_id=str(z["groups"][i]) if "groups" in z else None)
            if i in self.params.corrupt:
                row["image"] = row["image"][:20]
            rows.append(row)
        return samples_table(rows)


class PlantParams(StageParams):
    method: str
    remove_labels: list[int]  # samples with these labels are removed in favour of label 0 of the partition


class PlantDecisions(Stage):
    key = "test.plant_decisions"
    Params = PlantParams
    inputs = ("samples",)
    outputs = ("decisions",)

    def process(self, table, ctx):
        labels = table.column("label").to_pylist()
        ids = table.column("sample_id").to_pylist()
        rep = next((i for i, lab in zip(ids, labels) if lab == 0), None)
        rows = []
        for sid, lab in zip(ids, labels):
            rm = lab in self.params.remove_labels
            rows.append(dict(sample_id=sid, method=self.params.method, keep=not rm,
                             representative_id=rep if rm else None, score=0.5 if rm else None,
                             cluster_id="c0", reason=f"planted by {self.params.method}" if rm else None))
        return pa.Table.from_pylist(rows, schema=schemas.DECISIONS)


class PlantEdgesParams(StageParams):
    method: str
    edges: list[list[int]]  # [removed source_index, representative source_index], across partitions


class PlantEdges(Stage):
    """Plants removal decisions by source index, across partitions: methods that disagree on purpose."""

    key = "test.plant_edges"
    Params = PlantEdgesParams
    inputs = ("samples",)
    outputs = ("decisions",)

    def process(self, table, ctx):
        every = ctx.read_all("samples", columns=["sample_id", "source_index"])
        id_of = dict(zip(every.column("source_index").to_pylist(), every.column("sample_id").to_pylist()))
        rep_of = {a: b for a, b in self.params.edges}
        rows = []
        for sid, i in zip(table.column("sample_id").to_pylist(), table.column("source_index").to_pylist()):
            rm = i in rep_of
            rows.append(dict(sample_id=sid, method=self.params.method, keep=not rm,
                             representative_id=id_of[rep_of[i]] if rm else None, score=0.9 if rm else None,
                             cluster_id=f"{self.params.method}:c" if rm else None,
                             reason=f"planted {self.params.method} {i}->{rep_of[i]}" if rm else None))
        return pa.Table.from_pylist(rows, schema=schemas.DECISIONS)


registry.register("test.arrays", "tests.stages.dedup._helpers:ArraysSource")
registry.register("test.plant_edges", "tests.stages.dedup._helpers:PlantEdges")
registry.register("test.plant_decisions", "tests.stages.dedup._helpers:PlantDecisions")


def near_duplicate_images(n_unique: int = 30, n_dups: int = 10, size: int = 28, seed: int = 0):
    """``n_unique`` unrelated random-blob images + noisy copies of the first ``n_dups``.

    Returns (images uint8 (N, size, size), dup_of: index of the original for each copy).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    imgs = []
    for _ in range(n_unique):
        img = np.zeros((size, size))
        for _ in range(4):  # a few Gaussian blobs: smooth, like real images, and mutually distinct
            cy, cx, s = rng.uniform(4, size - 4), rng.uniform(4, size - 4), rng.uniform(2, 6)
            img += rng.uniform(0.3, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
        imgs.append(img / img.max() * 230)
    copies = [np.clip(imgs[i] + rng.normal(0, 2.0, (size, size)) + 5, 0, 255) for i in range(n_dups)]
    arr = np.stack(imgs + copies).astype(np.uint8)
    return arr, {n_unique + i: i for i in range(n_dups)}


class AHash(Stage):
    """64-bit average hash (8x8 mean threshold) into a ``hashes`` table - a stand-in for dedup.phash."""

    key = "test.ahash"
    Params = StageParams
    inputs = ("samples",)
    outputs = ("hashes",)

    def process(self, table, ctx):
        from PIL import Image

        from curate import imaging

        out = []
        for b in table.column("image").to_pylist():
            a = np.asarray(Image.fromarray(imaging.decode_png(b)).convert("L").resize((8, 8), Image.BILINEAR), float)
            bits = (a > a.mean()).reshape(-1)
            out.append(int(sum(1 << (63 - i) for i in range(64) if bits[i])))
        return pa.table({"sample_id": table.column("sample_id"), "phash": pa.array(out, pa.uint64()),
                         "dhash": pa.array(out, pa.uint64()), "minhash": pa.nulls(len(out), pa.list_(pa.uint64()))})


registry.register("test.ahash", "tests.stages.dedup._helpers:AHash")
