"""Declared Arrow schemas of every table curate writes.

Schemas are declared, never inferred from the first batch (datatrove #412/#503
show what inference costs). A stage checks its output against the declared
schema with :func:`check_schema`, which prints a Column | Found | Expected table
the way dask's ``check_meta`` does.
"""

from __future__ import annotations

import pyarrow as pa

from curate.errors import SchemaError

# the shard index (shards written by the ``shard`` stage, read by ``curate.load``)
SHARD_INDEX_NAME = "index.json"
SHARD_FORMAT = "curate.shards"

SAMPLES = pa.schema(
    [
        # unique per sample: hash(pixel_hash, source_uri, source_index)
        pa.field("sample_id", pa.string(), nullable=False),
        # content hash of the canonical decoded pixels (+ shape): equal pixels, equal hash
        pa.field("pixel_hash", pa.string(), nullable=False),
        # sha256 of the source file's bytes (null for rows of an array file)
        pa.field("source_hash", pa.string()),
        pa.field("source_uri", pa.string(), nullable=False),
        # row / frame / slice position inside the source
        pa.field("source_index", pa.int64(), nullable=False),
        # salted hash of patient / study / series or volume identity
        pa.field("group_id", pa.string()),
        pa.field("slice_index", pa.int32()),
        pa.field("label", pa.int64()),
        pa.field("label_name", pa.string()),
        # canonical image: 8-bit PNG, mode L (channels=1) or RGB (channels=3)
        pa.field("image", pa.binary(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("channels", pa.int8(), nullable=False),
        pa.field("text", pa.string()),
        pa.field("is_synthetic", pa.bool_(), nullable=False),
        # generator id and per-row seed for synthetic rows
        pa.field("generator", pa.string()),
        pa.field("seed", pa.int64()),
    ]
)

QUARANTINE = pa.schema(
    [
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("source_index", pa.int64()),
        # set when a later stage quarantines an already ingested sample
        pa.field("sample_id", pa.string()),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string()),
    ]
)


def embeddings_schema(dim: int, metadata: dict[str, str] | None = None) -> pa.Schema:
    """Embeddings of dimension ``dim``; encoder id and preprocessing go in metadata."""
    schema = pa.schema(
        [
            pa.field("sample_id", pa.string(), nullable=False),
            pa.field("embedding", pa.list_(pa.float32(), dim), nullable=False),
        ]
    )
    return schema.with_metadata(metadata) if metadata else schema


HASHES = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("phash", pa.uint64()),
        pa.field("dhash", pa.uint64()),
        pa.field("minhash", pa.list_(pa.uint64())),
    ]
)

DECISIONS = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("method", pa.string(), nullable=False),
        pa.field("keep", pa.bool_(), nullable=False),
        # who this sample duplicates (null for kept samples and singletons)
        pa.field("representative_id", pa.string()),
        # similarity to the representative (cosine, 1 - hamming/64, jaccard, 1.0 exact)
        pa.field("score", pa.float64()),
        pa.field("cluster_id", pa.string()),
        pa.field("reason", pa.string()),
    ]
)

PAIRS = pa.schema(
    [
        pa.field("anchor_id", pa.string(), nullable=False),
        pa.field("positive_id", pa.string()),
        pa.field("positive_kind", pa.string()),
        pa.field("positive_score", pa.float32()),
        pa.field("class_pair", pa.string()),
        pa.field("negative_ids", pa.list_(pa.string())),
        pa.field("negative_scores", pa.list_(pa.float32())),
    ]
)

TABLES: dict[str, pa.Schema] = {
    "samples": SAMPLES,
    "quarantine": QUARANTINE,
    "hashes": HASHES,
    "decisions": DECISIONS,
    # dedup.apply's removal log: the decisions of every removed sample
    "removals": DECISIONS,
    "pairs": PAIRS,
}


def _same_type(found: pa.DataType, expected: pa.DataType) -> bool:
    if found == expected:
        return True
    # an embedding's width is a property of the encoder, not of the table kind
    if pa.types.is_fixed_size_list(found) and pa.types.is_fixed_size_list(expected):
        return found.value_type == expected.value_type
    return False


def check_schema(table: pa.Table, expected: pa.Schema, where: str) -> pa.Table:
    """Return ``table`` with exactly ``expected``'s columns, in order, or raise.

    Extra columns are an error too: a table is what its schema says it is.
    """
    found = {f.name: f.type for f in table.schema}
    rows = []
    for field in expected:
        got = found.get(field.name)
        if got is None:
            rows.append((field.name, "-", str(field.type)))
        elif not _same_type(got, field.type):
            rows.append((field.name, str(got), str(field.type)))
    for name, typ in found.items():
        if expected.get_field_index(name) < 0:
            rows.append((name, str(typ), "-"))
    if rows:
        width = max(len(r[0]) for r in rows + [("Column", "", "")])
        lines = [f"{'Column':<{width}} | Found | Expected"]
        lines += [f"{c:<{width}} | {f} | {e}" for c, f, e in rows]
        raise SchemaError(f"{where}: table does not match its declared schema\n" + "\n".join(lines))
    table = table.select(expected.names)
    if not table.schema.equals(expected, check_metadata=True):
        if any(pa.types.is_fixed_size_list(f.type) for f in expected):
            # keep the found width; only names, order and metadata come from `expected`
            expected = pa.schema(list(table.schema), metadata=expected.metadata)
        table = table.cast(expected)
    return table


def empty(schema: pa.Schema) -> pa.Table:
    return schema.empty_table()


# ---- filters: removals without a representative (quality, outliers, decontaminate) ----------

# A decision whose method starts with one of these is a *filter*: the sample is removed for what it
# is (too dark, an outlier, a copy of an evaluation sample), not in favour of a kept duplicate, so
# its representative_id is null. dedup.apply removes it without a duplicate edge and curate.stats
# leaves it out of the representative checks.
FILTER_PREFIXES = ("quality:", "outliers", "decontaminate:")


def is_filter(method: str | None) -> bool:
    return method is not None and method.startswith(FILTER_PREFIXES)


QUALITY_CHECKS = ("dark", "light", "blurry", "low_information", "odd_aspect_ratio", "odd_size", "grayscale",
                  "near_blank", "padding_only", "burned_in_annotation")

# quality: one flag and one score per check (burned_in_annotation is null for non-DICOM samples)
QUALITY = pa.schema([pa.field("sample_id", pa.string(), nullable=False)]
                    + [f for c in QUALITY_CHECKS for f in (pa.field(c, pa.bool_()), pa.field(f"{c}_score", pa.float64()))])

# outliers: FiftyOne-style uniqueness (weighted distance to the k nearest neighbours)
OUTLIERS = pa.schema([
    pa.field("sample_id", pa.string(), nullable=False),
    pa.field("uniqueness", pa.float64()),  # raw weighted kNN distance
    pa.field("uniqueness_norm", pa.float64()),  # divided by the run's maximum, in [0, 1]
    pa.field("outlier", pa.bool_(), nullable=False),
])

# contamination: every (pretraining sample, evaluation set, route) match found by decontaminate
CONTAMINATION = pa.schema([
    pa.field("sample_id", pa.string(), nullable=False),
    pa.field("eval_set", pa.string(), nullable=False),
    pa.field("route", pa.string(), nullable=False),  # exact | phash | embedding | patient | study
    pa.field("eval_sample_id", pa.string()),
    pa.field("score", pa.float64()),
])

TABLES.update({"quality": QUALITY, "outliers": OUTLIERS, "contamination": CONTAMINATION})
