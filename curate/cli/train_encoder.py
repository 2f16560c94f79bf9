"""`curate train-encoder RUN_DIR`: SimCLR-train the `ssl` encoder on a run's samples."""

from __future__ import annotations

import typer

from curate.cli._common import Debug, Json, Quiet, handle_errors, out, print_json


def register(app: typer.Typer) -> None:
    @app.command("train-encoder")
    def train_encoder(
        run_dir: str = typer.Argument(..., help="run directory (after ingest, or after dedup.apply for the kept set)"),
        which: str = typer.Option("kept", help="'kept' (latest samples, after dedup.apply) or 'ingested'"),
        out_path: str = typer.Option(None, "--out", "-o", help="checkpoint path (default: RUN_DIR/models/ssl.safetensors)"),
        steps: int = typer.Option(None, min=1, help="optimisation steps (default: 1000)"),
        batch_size: int = typer.Option(None, min=2, help="images per step (default: 256)"),
        arch: str = typer.Option(None, help="resnet18 | resnet10 | resnet_tiny | resnet_nano (default: resnet18)"),
        loss: str = typer.Option(None, help="ntxent (SimCLR) | dcl (decoupled) (default: ntxent)"),
        temperature: float = typer.Option(None, help="softmax temperature (default: 0.5)"),
        lr: float = typer.Option(None, help="peak AdamW learning rate (default: 1e-3)"),
        image_size: int = typer.Option(None, help="training crop size (default: largest side, at most 96)"),
        hard_negatives: int = typer.Option(None, help="mined negatives per anchor from the run's pairs table (default: 0)"),
        mochi: bool = typer.Option(False, "--mochi", help="MoCHi hard-negative mixing (N=128, s=64, s'=32)"),
        weak_augment: bool = typer.Option(False, "--weak-augment", help="AdaInf weak augmentation (crop 0.2, jitter 0.4 x 0.5)"),
        device: str = typer.Option(None, help="auto | cpu | cuda (default: auto)"),
        seed: int = typer.Option(None, help="seed (default: 0)"),
        resume: str = typer.Option(None, help="continue from this checkpoint"),
        checkpoint_every: int = typer.Option(None, help="also checkpoint every N steps"),
        quiet: bool = Quiet,
        json_: bool = Json,
        debug: bool = Debug,
    ) -> None:
        """Train a small ResNet with SimCLR on RUN_DIR's samples; `embed` uses it with `encoder: ssl`."""
        from curate.train.from_run import train_from_run

        with handle_errors(debug):
            kw = dict(steps=steps, batch_size=batch_size, arch=arch, loss=loss, temperature=temperature, lr=lr,
                      image_size=image_size, hard_negatives=hard_negatives, device=device, seed=seed,
                      checkpoint_every=checkpoint_every, mochi={} if mochi else None)
            if weak_augment:
                kw.update(crop_min_scale=0.2, jitter_p=0.4, jitter_strength=0.5)
            res = train_from_run(run_dir, which=which, out=out_path, resume=resume, progress=not (quiet or json_),
                                 **{k: v for k, v in kw.items() if v is not None})
            summary = {"checkpoint": res.checkpoint, "steps": res.steps, "samples": res.stats["samples"],
                       "final_loss": res.losses[-1] if res.losses else None, "seconds": round(res.seconds, 2),
                       "images_per_s": round(res.images_per_s, 1), "device": res.stats["device"],
                       "config": res.config.model_dump()}
            if json_:
                print_json(summary)
                return
            out.print(f"trained {res.config.arch} on {summary['samples']} {which} samples for {res.steps} steps "
                      f"({summary['seconds']} s, {summary['images_per_s']} img/s, {summary['device']}); "
                      f"final loss {summary['final_loss']:.4f}")
            out.print(f"checkpoint: {res.checkpoint}")
            out.print(f"use it:  - stage: embed\n           encoder: ssl\n           weights: {res.checkpoint}")
