"""Compare arms: pretrain each with SimCLR at the same step budget, probe the frozen encoder.

For every arm and seed: :func:`curate.train.train` for ``steps`` steps of
``batch_size`` images (the same for every arm: the question is what a fixed
compute budget buys), then the frozen trunk's features of the probe's train and
test splits, a linear probe and a kNN classifier (:mod:`curate.eval.probe`).
The report gives mean +- sd over seeds and wall time per arm, and is written as
``eval.json`` + ``eval.png`` (bar plot, matplotlib Agg).

Python API::

    from curate.eval import Arm, evaluate_arms, load_probe, run_arms
    arms = run_arms("runs/x", ["full", "curated", "random"]) + [Arm("inflated", my_data_fn)]
    report = evaluate_arms(arms, load_probe("/data/fmnist"), {"steps": 500, "batch_size": 256}, seeds=[0, 1, 2])
    print(report.table())
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable


from curate.errors import ConfigError
from curate.eval.arms import Arm
from curate.eval.data import ProbeData, match_channels
from curate.eval.probe import encode, knn_accuracy, linear_probe


@dataclass
class ArmResult:
    arm: str
    seed: int
    n_samples: int | None
    linear_acc: float
    knn_acc: float
    final_loss: float
    train_seconds: float
    eval_seconds: float
    images_per_s: float


@dataclass
class EvalReport:
    results: list[ArmResult]
    config: dict[str, Any]
    probe: dict[str, Any]
    arms: dict[str, dict[str, Any]] = field(default_factory=dict)

    def summary(self) -> dict[str, dict[str, Any]]:
        out = {}
        for name in dict.fromkeys(r.arm for r in self.results):
            rs = [r for r in self.results if r.arm == name]

            def ms(key: str) -> tuple[float, float]:
                v = [getattr(r, key) for r in rs]
                return statistics.fmean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)

            lin, knn, tr = ms("linear_acc"), ms("knn_acc"), ms("train_seconds")
            out[name] = {"n_samples": rs[0].n_samples, "seeds": len(rs), "linear_mean": lin[0], "linear_sd": lin[1],
                         "knn_mean": knn[0], "knn_sd": knn[1], "train_seconds_mean": tr[0],
                         "wall_seconds": sum(r.train_seconds + r.eval_seconds for r in rs),
                         "final_loss_mean": ms("final_loss")[0]}
        return out

    def table(self) -> str:
        """Markdown table: arm | samples | linear probe | kNN | train s/seed | wall s."""
        s = self.summary()
        full_n = s.get("full", {}).get("n_samples")
        lines = ["| arm | samples | linear probe acc (mean ± sd) | kNN acc (mean ± sd) | train s / seed | wall s (all seeds) |",
                 "|---|---:|---:|---:|---:|---:|"]
        for name, r in s.items():
            n = r["n_samples"]
            share = f" ({100 * n / full_n:.0f}%)" if full_n and n else ""
            lines.append(f"| {name} | {n if n is not None else '?'}{share} | {100 * r['linear_mean']:.2f} ± "
                         f"{100 * r['linear_sd']:.2f} | {100 * r['knn_mean']:.2f} ± {100 * r['knn_sd']:.2f} | "
                         f"{r['train_seconds_mean']:.1f} | {r['wall_seconds']:.1f} |")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"config": self.config, "probe": self.probe, "arms": self.arms, "summary": self.summary(),
                "results": [asdict(r) for r in self.results]}

    def write(self, out_dir: str, name: str = "eval") -> dict[str, str]:
        """Write ``<name>.json`` and ``<name>.png`` into ``out_dir``; return their paths."""
        os.makedirs(out_dir, exist_ok=True)
        jpath, ppath = os.path.join(out_dir, f"{name}.json"), os.path.join(out_dir, f"{name}.png")
        with open(jpath, "w") as f:
            json.dump(self.to_json(), f, indent=2)
        plot(self, ppath)
        return {"json": jpath, "png": ppath}


def plot(report: EvalReport, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = report.summary()
    names = list(s)
    x = range(len(names))
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(names), 3.6))
    w = 0.38
    lin = [100 * s[n]["linear_mean"] for n in names]
    knn = [100 * s[n]["knn_mean"] for n in names]
    ax.bar([i - w / 2 for i in x], lin, w, yerr=[100 * s[n]["linear_sd"] for n in names], capsize=3,
           label="linear probe", color="#3b6ea8")
    ax.bar([i + w / 2 for i in x], knn, w, yerr=[100 * s[n]["knn_sd"] for n in names], capsize=3,
           label="kNN (k=20)", color="#e3a33b")
    ax.set_xticks(list(x))
    ax.set_xticklabels([f"{n}\n(n={s[n]['n_samples']})" for n in names])
    lo = min(lin + knn)
    ax.set_ylim(max(0.0, lo - 10), min(100.0, max(lin + knn) + 5))
    ax.set_ylabel("top-1 accuracy (%)")
    cfg = report.config
    ax.set_title(f"{cfg.get('arch')} SimCLR, {cfg.get('steps')} steps x {cfg.get('batch_size')}, "
                 f"{s[names[0]]['seeds']} seeds", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def evaluate_arms(arms: list[Arm], probe: ProbeData, train_config: dict[str, Any] | Any = None,
                  seeds: list[int] | tuple[int, ...] = (0, 1, 2), knn_k: int = 20, probe_l2: float = 1e-4,
                  progress: bool = False, log: Callable[[str], None] | None = print) -> EvalReport:
    """Pretrain every arm for the same number of steps per seed, then probe; see the module docstring."""
    from curate.train.simclr import make_config, resolve_device, train

    if not arms:
        raise ConfigError("no arms to evaluate")
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise ConfigError(f"arm names must be unique, got {names}")
    base = make_config(train_config)
    device = resolve_device(base.device)
    results: list[ArmResult] = []
    for arm in arms:
        for seed in seeds:
            cfg = make_config(base, seed=seed, **arm.train_overrides)
            data = arm.materialise(seed)
            bs = getattr(data, "batch_size", cfg.batch_size)
            if bs != cfg.batch_size:
                raise ConfigError(f"arm '{arm.name}' yields batches of {bs} but the budget is batch_size="
                                  f"{cfg.batch_size}; return images / (images, weights) / a dataset instead")
            t0 = time.perf_counter()
            res = train(data, cfg, progress=progress)
            t_train = time.perf_counter() - t0
            t1 = time.perf_counter()
            enc, size, ch = res.model.encoder, res.config.image_size, res.config.in_channels
            ftr = encode(enc, match_channels(probe.train_images, ch), size, device=device)
            fte = encode(enc, match_channels(probe.test_images, ch), size, device=device)
            lin = linear_probe(ftr, probe.train_labels, fte, probe.test_labels, l2=probe_l2)
            knn = knn_accuracy(ftr, probe.train_labels, fte, probe.test_labels, k=knn_k)
            t_eval = time.perf_counter() - t1
            n = arm.n_samples if arm.n_samples is not None else (len(data) if hasattr(data, "__len__") else None)
            r = ArmResult(arm.name, seed, n, lin, knn, res.losses[-1], round(t_train, 3), round(t_eval, 3),
                          round(res.images_per_s, 1))
            results.append(r)
            if log:
                log(f"[eval] {arm.name:<9} seed {seed}: linear {100 * lin:.2f}%  kNN {100 * knn:.2f}%  "
                    f"loss {r.final_loss:.3f}  train {t_train:.1f}s  eval {t_eval:.1f}s")
    cfg_json = base.model_dump(mode="json")
    cfg_json.pop("seed", None)
    return EvalReport(results=results, config={**cfg_json, "seeds": list(seeds), "device": str(device)},
                      probe={"source": probe.source, "train": int(probe.train_images.shape[0]),
                             "test": int(probe.test_images.shape[0]), "knn_k": knn_k, "l2": probe_l2},
                      arms={a.name: {"n_samples": a.n_samples, "description": a.description,
                                     "train_overrides": a.train_overrides} for a in arms})
