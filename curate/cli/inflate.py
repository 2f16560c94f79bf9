"""`curate inflate RUN_DIR`: add diffusion-generated data to a run at an AdaInf-calibrated mix."""

from __future__ import annotations

import json

import typer

from curate.cli._common import (Debug, Json, Quiet, Scheduler, Workers, given, handle_errors, out, print_accounting,
                                 print_json)


def register(app: typer.Typer) -> None:
    @app.command("inflate")
    def inflate(
        run_dir: str = typer.Argument(..., help="run directory (ingest, optionally embed / dedup done)"),
        pipeline: str = typer.Option(None, "--pipeline", "-p", help="local diffusers pipeline directory to use "
                                     "(inflate.load; never downloaded); default: train one (inflate.train)"),
        train_steps: int = typer.Option(None, "--train-steps", help="inflate.train: optimisation steps (default: 20000)"),
        batch_size: int = typer.Option(None, "--batch-size", help="inflate.train: batch size (default: 128)"),
        channels_: str = typer.Option(None, "--unet-channels", help="inflate.train: UNet block widths (default: 64,128,128)"),
        unconditional: bool = typer.Option(None, "--unconditional/--conditional", help="inflate.train: ignore labels (default: conditional when every sample has one)"),
        n_images: int = typer.Option(None, "--n-images", "-n", help="images to generate before the filter (default: 10000)"),
        sampler: str = typer.Option(None, "--sampler", help="ddim (deterministic, eta 0) or ddpm (default: ddim)"),
        steps: int = typer.Option(None, "--sampling-steps", help="denoising steps per image (default: 50)"),
        no_filter: bool = typer.Option(None, "--no-filter/--filter", help="keep memorised / redundant images (default: filter)"),
        mode: str = typer.Option(None, "--mode", help="AdaInf mix: paper (dup 10 + weak augmentation), gap "
                                 "(from measured precision), proxy (short eval grid) (default: paper)"),
        dup: float = typer.Option(None, "--dup", help="paper mode: real replication factor (default: 10)"),
        device: str = typer.Option(None, "--device", help="auto (cuda if available), cpu, cuda (default: auto)"),
        scheduler: str = Scheduler,
        workers: int = Workers,
        quiet: bool = Quiet,
        json_: bool = Json,
        debug: bool = Debug,
    ) -> None:
        """Train (or load) a DDPM, generate images into RUN_DIR, reject near-copies of real / generated
        images, and compute AdaInf's real replication + augmentation (read by `shard` and the loader)."""
        from curate.config import PipelineConfig
        from curate.errors import ConfigError
        from curate.extend import run_pipeline_of
        from curate.runner import Runner
        from curate.stages.inflate.adainf import with_inflate_stages

        with handle_errors(debug):
            try:
                widths = None if channels_ is None else [int(c) for c in channels_.split(",")]
            except ValueError:
                raise ConfigError(f"--unet-channels '{channels_}': expected comma-separated integers, "
                                  f"e.g. 64,128,128") from None
            # only the flags the user set override the stage defaults (declared once, in the stage)
            flip = lambda x: None if x is None else not x  # noqa: E731
            gen = ({"stage": "inflate.load", "path": pipeline} if pipeline else
                   {"stage": "inflate.train", **given(steps=train_steps, batch_size=batch_size,
                                                      block_out_channels=widths, class_conditional=flip(unconditional),
                                                      device=device), "progress": not (quiet or json_)})
            new = [gen,
                   {"stage": "inflate.generate", **given(n_images=n_images, sampler=sampler, steps=steps,
                                                         filter=flip(no_filter), device=device)},
                   {"stage": "inflate.adainf", **given(mode=mode, dup=dup)}]
            data = run_pipeline_of(run_dir)
            cfg = PipelineConfig(name=data.get("name", "pipeline"), seed=data.get("seed", 0),
                                 stages=with_inflate_stages(data.get("stages", []), new))
            cfg.specs()
            summary = Runner(cfg, run_dir, scheduler=scheduler, workers=workers,
                             progress=not (quiet or json_)).run()
            stages = summary["stages"]
            gstats = next(v for v in stages.values() if v["key"] == "inflate.generate")["counters"]
            adir = next(k for k, v in stages.items() if v["key"] == "inflate.adainf")
            from curate.stages.inflate.adainf import read_adainf
            from curate.train.data import run_context

            row = read_adainf(run_context(run_dir))
            if json_:
                print_json({"generate": gstats, "adainf": row, "summary": summary})
                return
            out.print(f"generated {gstats.get('generated', 0)}, kept {gstats.get('synthetic_added', 0)}, "
                      f"rejected memorised {gstats.get('rejected_memorised', 0)} / redundant "
                      f"{gstats.get('rejected_redundant', 0)}  ({adir})")
            if row:
                gap = "" if row["precision"] is None else (f"; FD {row['fd']:.4g} (real-split floor "
                                                           f"{row['fd_real_split']:.3g}), precision "
                                                           f"{row['precision']:.3f}, recall {row['recall']:.3f}")
                out.print(f"AdaInf ({row['mode']}): real x{row['real_replication']:.3g}, real share "
                          f"{row['real_share']:.3f}, augmentation {json.dumps(row['augmentation'])}{gap}")
            print_accounting(summary)
