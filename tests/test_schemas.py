from __future__ import annotations

import pyarrow as pa
import pytest

from curate import schemas
from curate.errors import SchemaError


def test_mismatch_prints_found_expected_table():
    t = pa.table({"sample_id": ["a"], "keep": ["yes"], "extra": [1]})
    with pytest.raises(SchemaError) as e:
        schemas.check_schema(t, schemas.DECISIONS, "dedup output")
    msg = str(e.value)
    assert "Column" in msg and "Found" in msg and "Expected" in msg
    assert "keep" in msg and "string" in msg and "bool" in msg and "extra" in msg and "method" in msg


def test_embedding_width_comes_from_table():
    t = pa.table({"sample_id": ["a"], "embedding": pa.array([[1.0, 2.0]], pa.list_(pa.float32(), 2))})
    out = schemas.check_schema(t, schemas.embeddings_schema(8, {"encoder": "x"}), "embed")
    assert out.schema.field("embedding").type.list_size == 2 and out.schema.metadata == {b"encoder": b"x"}
