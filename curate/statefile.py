"""Nested training state (optimizer, EMA, RNG, counters) as safetensors + JSON, never pickle.

``torch.save`` / ``torch.load(weights_only=False)`` run arbitrary code from a
file (pickle's ``__reduce__``), and a run directory is data that others may
write. :func:`save` splits an object made of dicts, lists, tuples, tensors and
JSON scalars into ``<path>.safetensors`` (the tensors, named ``t0, t1, ...``)
and ``<path>.json`` (the structure, with ``{"__tensor__": "t0"}`` in place of
each tensor); :func:`load` rebuilds it. Nothing else is accepted: a value of
any other type is a ``TypeError`` at save time.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

FORMAT = "curate-state/1"


def _encode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if torch.is_tensor(obj):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        for k in obj:
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise TypeError(f"state dict key {k!r}: only str / int keys are stored")
        return {"__dict__": [[k, _encode(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"__list__" if isinstance(obj, list) else "__tuple__": [_encode(v, tensors) for v in obj]}
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} in a state file (tensors, containers and JSON scalars only)")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {k: _decode(v, tensors) for k, v in obj["__dict__"]}
        if "__list__" in obj:
            return [_decode(v, tensors) for v in obj["__list__"]]
        if "__tuple__" in obj:
            return tuple(_decode(v, tensors) for v in obj["__tuple__"])
        raise ValueError(f"unknown node {sorted(obj)} in a state file")
    return obj


def save(obj: Any, path: str) -> None:
    """Write ``path + '.safetensors'`` and ``path + '.json'`` (the JSON last, so it marks completion)."""
    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(obj, tensors)
    save_file(tensors, path + ".safetensors", metadata={"format": FORMAT})
    tmp = f"{path}.json.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump({"format": FORMAT, "tree": tree}, f)
    os.replace(tmp, path + ".json")


def exists(path: str) -> bool:
    return os.path.isfile(path + ".json") and os.path.isfile(path + ".safetensors")


def load(path: str) -> Any:
    """Rebuild what :func:`save` wrote; ValueError if the files are not a state file."""
    with open(path + ".json") as f:
        meta = json.load(f)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"'{path}.json' is not a curate state file (format {FORMAT})")
    return _decode(meta["tree"], load_file(path + ".safetensors"))
