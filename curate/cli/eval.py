"""`curate eval RUN_DIR --probe DATA`: does the curated set train a better encoder than full / random?"""

from __future__ import annotations

import typer

from curate.cli._common import Debug, Json, handle_errors, out, print_json


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_(
        run_dir: str = typer.Argument(..., help="run directory with ingest (and dedup.apply for the curated arm)"),
        probe: str = typer.Option(..., "--probe", help="labelled data: IDX dir (Fashion-MNIST layout), two-split "
                                                      ".npz, or the train split (file.npz[:split] / run dir) with --probe-test"),
        probe_test: str = typer.Option(None, "--probe-test", help="test split when --probe is only the train split"),
        arms: str = typer.Option("full,curated,random", help="comma-separated: full, curated, random, inflated"),
        steps: int = typer.Option(500, min=1, help="optimisation steps per arm and seed (the equal budget)"),
        batch_size: int = typer.Option(256, min=2, help="images per step"),
        arch: str = typer.Option("resnet18", help="resnet18 | resnet10 | resnet_tiny | resnet_nano"),
        loss: str = typer.Option("ntxent", help="ntxent | dcl"),
        temperature: float = typer.Option(0.5, help="softmax temperature"),
        lr: float = typer.Option(1e-3, help="peak AdamW learning rate"),
        seeds: str = typer.Option("0,1,2", help="comma-separated seeds"),
        image_size: int = typer.Option(None, help="training / probe image size (default: the run's largest side, <= 96)"),
        max_probe_train: int = typer.Option(None, help="subsample the probe's train split (seeded)"),
        max_probe_test: int = typer.Option(None, help="subsample the probe's test split (seeded)"),
        knn_k: int = typer.Option(20, help="k of the kNN classifier"),
        device: str = typer.Option("auto", help="auto | cpu | cuda"),
        out_dir: str = typer.Option(None, "--out", "-o", help="where eval.json / eval.png go (default: RUN_DIR/eval)"),
        progress: bool = typer.Option(False, "--progress", help="show a progress bar per training run"),
        json_: bool = Json,
        debug: bool = Debug,
    ) -> None:
        """Pretrain SimCLR on each arm at the same step budget, then linear-probe and kNN the frozen encoder."""
        import os

        from curate.errors import ConfigError
        from curate.eval import evaluate_arms, load_probe, run_arms

        with handle_errors(debug):
            try:
                seed_list = [int(s) for s in seeds.split(",") if s.strip()]
            except ValueError:
                raise ConfigError(f"--seeds '{seeds}': expected comma-separated integers, e.g. 0,1,2") from None
            names = [a.strip() for a in arms.split(",") if a.strip()]
            data = load_probe(probe, probe_test).subsample(max_probe_train, max_probe_test)
            arm_list = run_arms(run_dir, names, image_size=image_size)
            cfg = {"steps": steps, "batch_size": batch_size, "arch": arch, "loss": loss, "temperature": temperature,
                   "lr": lr, "device": device}
            log = None if json_ else (lambda m: out.print(m, markup=False))
            report = evaluate_arms(arm_list, data, cfg, seeds=seed_list, knn_k=knn_k, progress=progress, log=log)
            paths = report.write(out_dir or os.path.join(run_dir, "eval"))
            if json_:
                print_json({**report.to_json(), "files": paths})
                return
            out.print(report.table(), markup=False)
            out.print(f"wrote {paths['json']} and {paths['png']}")
