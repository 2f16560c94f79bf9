"""Stage keys (``dedup.phash``) to stage classes. Pipelines name keys, never import paths."""

from __future__ import annotations

import difflib
import importlib

from curate.errors import ConfigError

# key -> "module:Class"; imported lazily so heavy optional dependencies
# (diffusers, pydicom, ...) load only when a pipeline uses the stage.
_STAGES: dict[str, str] = {
    "ingest": "curate.stages.ingest:Ingest",
    "embed": "curate.stages.embed:Embed",
    "dedup.exact": "curate.stages.dedup.exact:ExactDedup",
    "dedup.phash": "curate.stages.dedup.phash:PHashDedup",
    "dedup.minhash": "curate.stages.dedup.minhash:MinHashDedup",
    "dedup.semantic": "curate.stages.dedup.semantic:SemanticDedup",
    "dedup.apply": "curate.stages.dedup.apply:ApplyDedup",
    "mine.negatives": "curate.stages.mine.negatives:MineNegatives",
    "mine.positives": "curate.stages.mine.positives:MinePositives",
    "inflate.train": "curate.stages.inflate.train:InflateTrain",
    "inflate.load": "curate.stages.inflate.train:InflateLoad",
    "inflate.generate": "curate.stages.inflate.generate:InflateGenerate",
    "inflate.adainf": "curate.stages.inflate.adainf:AdaInf",
    "shard": "curate.stages.shard:Shard",
    "quality": "curate.stages.quality.stage:Quality",
    "outliers": "curate.stages.outliers:Outliers",
    "decontaminate": "curate.stages.decontaminate:Decontaminate",
}


def register(key: str, target: str) -> None:
    """Register ``key`` -> ``"package.module:ClassName"`` (for plugins and tests)."""
    _STAGES[key] = target


def keys() -> list[str]:
    return sorted(_STAGES)


def get(key: str):
    target = _STAGES.get(key)
    if target is None:
        hint = difflib.get_close_matches(key, _STAGES, n=1)
        extra = f" Did you mean '{hint[0]}'?" if hint else ""
        raise ConfigError(f"unknown stage '{key}'.{extra} Known stages: {', '.join(keys())}")
    module, _, cls = target.partition(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError as err:
        raise ConfigError(f"stage '{key}' is not available: {err}. Install the extra it needs "
                          f"(pip install 'curate[medical]' etc.)") from None
    except AttributeError:
        raise ConfigError(f"stage '{key}' is not available in this version ({target} missing)") from None
