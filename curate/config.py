"""Typed pipeline configuration, validated before any compute.

A pipeline YAML names stages by registry key; every other key of a stage entry
is a parameter of that stage's ``Params`` model (pydantic, ``extra="forbid"``)::

    name: demo
    run_dir: runs/demo
    seed: 0
    stages:
      - stage: ingest
        sources: [{type: dicom, path: data/demo/dicom}]
      - stage: dedup.phash
        threshold: 6
        scope: per_group
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from curate import registry
from curate.errors import ConfigError

_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")


def safe_name(v: str | None) -> str | None:
    """Names become directory / file names: ``[A-Za-z0-9_.-]``, not starting with '.', at most 100 characters."""
    if v is not None and not _SAFE_NAME.fullmatch(v):
        raise ValueError(f"{v!r} is not a valid name: use letters, digits, '_', '.' and '-' only, not starting "
                         f"with '.' (it becomes a directory name inside the run directory)")
    return v


def execution_field(default: Any, **kwargs: Any) -> Any:
    """A parameter that changes how the work is cut or shown (task splits, chunk / block sizes, progress
    bars), never the result: it is left out of the config hash, so changing it reruns nothing."""
    return Field(default, json_schema_extra={"execution": True}, **kwargs)


def execution_keys(params: "StageParams") -> set[str]:
    return {k for k, f in type(params).model_fields.items()
            if isinstance(f.json_schema_extra, dict) and f.json_schema_extra.get("execution")}


def absolute_path(path: str | None) -> str | None:
    """``path`` made absolute against the current directory (URLs such as ``s3://b/k`` unchanged).

    Config is validated on the driver, so every path a task carries is absolute and means the same
    file on a Dask worker started in another directory."""
    if path is None or "://" in path:
        return path
    return os.path.abspath(os.path.expanduser(path))


# a local file or directory named in a pipeline: resolved to an absolute path when the config is built
LocalPath = Annotated[str, AfterValidator(absolute_path)]


class StageParams(BaseModel):
    """Parameters every stage has. Subclass per stage; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(None, description="directory / display name; default: the stage key")
    on_error: Literal["raise", "skip", "quarantine"] = Field(
        "quarantine", description="what a bad sample does: stop the run, drop it (counted), or quarantine it"
    )

    _name = field_validator("name")(classmethod(lambda cls, v: safe_name(v)))


class StageSpec(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    key: str
    params: StageParams
    index: int

    @property
    def name(self) -> str:
        return self.params.name or self.key.replace(".", "_")

    @property
    def dirname(self) -> str:
        return f"{self.index:02d}_{self.name}"

    def params_json(self) -> dict[str, Any]:
        return self.params.model_dump(mode="json", exclude={"name"})

    def hashed_params(self) -> dict[str, Any]:
        """The parameters that decide results: all but the execution-only ones (:func:`execution_field`)."""
        return self.params.model_dump(mode="json", exclude={"name", *execution_keys(self.params)})


class PipelineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "pipeline"
    description: str = ""
    run_dir: str | None = None
    seed: int = 0
    stages: list[dict[str, Any]]

    _name = field_validator("name")(classmethod(lambda cls, v: safe_name(v)))

    def specs(self) -> list[StageSpec]:
        return build_specs(self.stages)


def _format_validation(err: ValidationError, where: str) -> str:
    lines = [f"{where}: invalid configuration"]
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key; remove it or check its spelling (see `curate validate --help-stage`)"
        elif e["type"] == "missing":
            msg = "required key is missing; add it"
        lines.append(f"  - {loc}: {msg}")
    return "\n".join(lines)


def build_specs(stages: list[dict[str, Any]]) -> list[StageSpec]:
    if not stages:
        raise ConfigError("pipeline has no stages; add at least `- stage: ingest`")
    specs, seen = [], set()
    for i, entry in enumerate(stages):
        if not isinstance(entry, dict) or "stage" not in entry:
            raise ConfigError(f"stages[{i}]: each stage needs a `stage:` key naming a registered stage")
        entry = dict(entry)
        key = entry.pop("stage")
        cls = registry.get(key)
        try:
            params = cls.Params(**entry)
        except ValidationError as err:
            raise ConfigError(_format_validation(err, f"stages[{i}] ({key})")) from None
        spec = StageSpec(key=key, params=params, index=i)
        if spec.name in seen:
            raise ConfigError(f"stages[{i}] ({key}): duplicate stage name '{spec.name}'; set a distinct `name:`")
        seen.add(spec.name)
        _check_device(spec)
        specs.append(spec)
    check_order(specs)
    return specs


# tables -> a stage that writes (or settles) them, for the hint in an order error
_WRITER_HINT = {"samples": "ingest", "embeddings": "embed", "decisions": "dedup.exact / dedup.phash / "
                "dedup.minhash / dedup.semantic", "hashes": "dedup.phash", "generator": "inflate.train or inflate.load",
                "removals": "dedup.apply", "pairs": "mine.positives or mine.negatives", "adainf": "inflate.adainf"}
_SETTLER_HINT = {"decisions": "dedup.apply"}


def check_order(specs: list[StageSpec]) -> None:
    """Reject impossible stage orders before any compute.

    Each stage's ``requires`` tables must be written by an earlier stage, and a stage with ``needs_settled``
    (shard, mine.*) must not follow a dedup stage unless a ``dedup.apply`` comes between them: shards would
    ship removed duplicates and mined pairs would name rows that are not in the shards. A table is settled
    once: a second ``dedup.apply`` could remove the representative an earlier one's removals name. Nor may
    shard / mine.* come before a ``dedup.apply`` that applies decisions written after them.
    """
    last_writer: dict[str, StageSpec] = {}
    settled: dict[str, int] = {}  # table -> index of the last stage that settled it
    settler: dict[str, StageSpec] = {}  # table -> the stage that settled it (once per pipeline)
    consumer: dict[str, StageSpec] = {}  # table -> the first stage that needs it settled
    exposed: dict[str, tuple[StageSpec, StageSpec]] = {}  # table -> (that stage, a later writer of the table)
    for spec in specs:
        cls = registry.get(spec.key)
        where = f"stages[{spec.index}] ({spec.key})"
        for table in cls.settles:
            s = settler.get(table)
            if s is not None:  # a later apply could remove the kept representative of an earlier one's removal
                raise ConfigError(f"{where} comes after {s.key} (stages[{s.index}]), which already applied the "
                                  f"'{table}'; a pipeline applies them once: put every dedup and filter stage "
                                  f"before a single `- stage: {s.key}`")
        requires = cls.inputs[:1] if cls.requires is None else cls.requires
        for table in requires:
            if table not in last_writer:
                fix = f"`- stage: {_WRITER_HINT[table]}`" if table in _WRITER_HINT else "a stage that writes it"
                raise ConfigError(f"{where} needs the '{table}' table, but no earlier stage writes it; "
                                  f"add {fix} before it")
        for table in cls.needs_settled:
            w = last_writer.get(table)
            if w is not None and settled.get(table, -1) < w.index:
                fix = _SETTLER_HINT.get(table, "a stage that applies it")
                raise ConfigError(f"{where} comes after {w.key} (stages[{w.index}]) but its '{table}' are not "
                                  f"applied yet, so {spec.key} would see removed samples as kept; put "
                                  f"`- stage: {fix}` between them")
        for table in cls.settles:
            if table in exposed:  # that stage saw (shard: shipped, mine: named) rows this stage removes
                c, w = exposed[table]
                raise ConfigError(f"stages[{c.index}] ({c.key}) comes before {spec.key} (stages[{spec.index}]), "
                                  f"which applies the '{table}' of {w.key} (stages[{w.index}]), so {c.key} would "
                                  f"see samples that are removed later; move it after {spec.key}")
            settled[table] = spec.index
            settler[table] = spec
        for table in cls.needs_settled:
            consumer.setdefault(table, spec)
        for table in cls.outputs:
            last_writer[table] = spec
            if table in consumer and table not in exposed:
                exposed[table] = (consumer[table], spec)
            if not cls.inputs and table in cls.outputs[1:]:  # a source's extra tables are given data, not pending
                settled[table] = spec.index


def _check_device(spec: StageSpec) -> None:
    """``device: cuda[:N]`` without a visible CUDA device fails now, not after ingest has run."""
    device = getattr(spec.params, "device", None)
    if not isinstance(device, str) or not device.startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(f"stages[{spec.index}] ({spec.key}): device '{device}' requested but no CUDA device is "
                          f"visible; use `device: auto` (GPU when present) or `device: cpu`")
    idx = device.partition(":")[2]
    if idx and (not idx.isdigit() or int(idx) >= torch.cuda.device_count()):
        raise ConfigError(f"stages[{spec.index}] ({spec.key}): device '{device}' does not exist "
                          f"({torch.cuda.device_count()} CUDA device(s)); use cuda:0..{torch.cuda.device_count() - 1}")


def check_run_dir(run_dir: str) -> None:
    """A run directory must be a directory (or not exist yet)."""
    if "://" in run_dir:
        return
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise ConfigError(f"run directory '{run_dir}' exists and is not a directory; pass another --run-dir "
                          f"or remove that file")


def set_override(data: dict[str, Any], assignment: str) -> None:
    """Apply ``key.path=value`` (YAML-parsed value); ``stages.N.key`` or ``<stage-name>.key``."""
    if "=" not in assignment:
        raise ConfigError(f"--set '{assignment}': expected KEY=VALUE, e.g. --set dedup_phash.threshold=8")
    path, _, raw = assignment.partition("=")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        problem = str(err).splitlines()[0]
        raise ConfigError(f"--set '{assignment}': value is not valid YAML ({problem}); quote it, "
                          f"e.g. --set 'KEY=\"{raw}\"'") from None
    parts = path.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set '{assignment}': empty key segment in '{path}'; use e.g. stages.1.threshold=8")
    node: Any = data
    if parts[0] != "stages" and len(parts) > 1 and parts[0] not in data:
        named = [s for s in data.get("stages") or [] if isinstance(s, dict) and (
            (s.get("name") or str(s.get("stage", "")).replace(".", "_")) == parts[0] or s.get("stage") == parts[0])]
        if not named:
            names = [s.get("name") or str(s.get("stage", "")).replace(".", "_")
                     for s in data.get("stages") or [] if isinstance(s, dict)]
            raise ConfigError(f"--set '{assignment}': no stage named '{parts[0]}'; stage names are {names}")
        node, parts = named[0], parts[1:]
    walked: list[str] = []
    for p in parts[:-1]:
        node = _step(node, p, assignment, walked)
        walked.append(p)
    last = parts[-1]
    if isinstance(node, list):
        node[_list_index(node, last, assignment, walked)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ConfigError(f"--set '{assignment}': '{'.'.join(walked)}' is a {type(node).__name__}, not a "
                          f"mapping, so it has no key '{last}'")


def _list_index(node: list, part: str, assignment: str, walked: list[str]) -> int:
    where = ".".join(walked) or "(top level)"
    if not part.lstrip("-").isdigit():
        raise ConfigError(f"--set '{assignment}': '{where}' is a list; use an index 0..{len(node) - 1}, not '{part}'")
    i = int(part)
    if not 0 <= i < len(node):
        raise ConfigError(f"--set '{assignment}': '{where}' has {len(node)} entries; index {i} is out of range "
                          f"(use 0..{len(node) - 1})")
    return i


def _step(node: Any, part: str, assignment: str, walked: list[str]) -> Any:
    if isinstance(node, list):
        return node[_list_index(node, part, assignment, walked)]
    if isinstance(node, dict):
        child = node.setdefault(part, {})
        if child is None:
            child = node[part] = {}
        return child
    raise ConfigError(f"--set '{assignment}': '{'.'.join(walked)}' is a {type(node).__name__}, not a mapping, "
                      f"so it has no key '{part}'")


def load_pipeline(path: str | os.PathLike, overrides: list[str] | None = None) -> PipelineConfig:
    """Read and validate a pipeline YAML; raise :class:`ConfigError` with a fix on any problem."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"pipeline file '{p}' not found; pass the path of a YAML file (see pipelines/)")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping with `stages:` at the top level")
    for o in overrides or []:
        set_override(data, o)
    try:
        cfg = PipelineConfig(**data)
    except ValidationError as err:
        raise ConfigError(_format_validation(err, str(p))) from None
    cfg.specs()  # validate every stage now, before any compute
    return cfg


def config_hash(spec: StageSpec, upstream_hash: str = "", version: str = "1") -> str:
    """Hash of a stage's parameters chained with everything upstream of it."""
    blob = json.dumps([upstream_hash, spec.key, version, spec.hashed_params()], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
