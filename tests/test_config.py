"""Pipeline configuration: validated before compute, errors say how to fix them."""

from __future__ import annotations

import pytest

from curate.config import load_pipeline, set_override
from curate.errors import ConfigError


def write(tmp_path, text):
    p = tmp_path / "p.yaml"
    p.write_text(text)
    return p


def test_unknown_key_is_named(tmp_path, idx_dataset):
    img, lab, *_ = idx_dataset
    p = write(tmp_path, f"stages:\n  - stage: ingest\n    partition_sise: 5\n    sources: [{{type: idx, images: {img}}}]\n")
    with pytest.raises(ConfigError, match=r"partition_sise: unknown key"):
        load_pipeline(p)


def test_wrong_type_and_unknown_stage(tmp_path, idx_dataset):
    img, lab, *_ = idx_dataset
    p = write(tmp_path, f"stages:\n  - stage: ingest\n    partition_size: lots\n    sources: [{{type: idx, images: {img}}}]\n")
    with pytest.raises(ConfigError, match=r"partition_size"):
        load_pipeline(p)
    p = write(tmp_path, "stages:\n  - stage: ingset\n")
    with pytest.raises(ConfigError, match=r"unknown stage 'ingset'. Did you mean 'ingest'"):
        load_pipeline(p)


def test_missing_input_file_and_pipeline(tmp_path):
    p = write(tmp_path, "stages:\n  - stage: ingest\n    sources: [{type: folder, path: /no/such/dir}]\n")
    with pytest.raises(ConfigError, match=r"/no/such/dir' does not exist; fix the path"):
        load_pipeline(p)
    with pytest.raises(ConfigError, match="not found"):
        load_pipeline(tmp_path / "nope.yaml")


def test_set_override(tmp_path, idx_dataset):
    img, lab, *_ = idx_dataset
    p = write(tmp_path, f"stages:\n  - stage: ingest\n    sources: [{{type: idx, images: {img}}}]\n")
    cfg = load_pipeline(p, ["ingest.partition_size=7", "seed=3"])
    assert cfg.seed == 3 and cfg.specs()[0].params.partition_size == 7
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        set_override({}, "oops")


def test_execution_knobs_are_not_in_the_config_hash():
    from curate.config import StageSpec, config_hash
    from curate import registry

    def h(key, **kw):
        cls = registry.get(key)
        return config_hash(StageSpec(key=key, params=cls.Params(**kw), index=0), "", cls.version)

    assert h("dedup.phash", splits=1) == h("dedup.phash", splits=16)
    assert h("dedup.minhash", splits=1) == h("dedup.minhash", splits=8)
    assert h("dedup.semantic", chunk_items=256) == h("dedup.semantic", chunk_items=100000)
    assert h("mine.negatives", block_size=64) == h("mine.negatives", block_size=4096)
    assert h("inflate.train", progress=False) == h("inflate.train", progress=True)
    assert h("dedup.phash", threshold=4) != h("dedup.phash", threshold=6)  # a result-changing key still counts
