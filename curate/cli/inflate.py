"""`curate inflate RUN_DIR`: add diffusion-generated data to a run at an AdaInf-calibrated mix."""

from __future__ import annotations

import json

import typer

from curate.cli._common import Debug, Json, Quiet, Scheduler, Workers, handle_errors, out, print_accounting, print_json


def register(app: typer.Typer) -> None:
    @app.command("inflate")
    def inflate(
        run_dir: str = typer.Argument(..., help="run directory (ingest, optionally embed / dedup done)"),
        pipeline: str = typer.Option(None, "--pipeline", "-p", help="local diffusers pipeline directory to use "
                                     "(inflate.load; never downloaded); default: train one (inflate.train)"),
        train_steps: int = typer.Option(20000, "--train-steps", help="inflate.train: optimisation steps"),
        batch_size: int = typer.Option(128, "--batch-size", help="inflate.train: batch size"),
        channels_: str = typer.Option("64,128,128", "--unet-channels", help="inflate.train: UNet block widths"),
        unconditional: bool = typer.Option(False, "--unconditional", help="inflate.train: ignore labels"),
        n_images: int = typer.Option(10000, "--n-images", "-n", help="images to generate (before the filter)"),
        sampler: str = typer.Option("ddim", "--sampler", help="ddim (deterministic, eta 0) or ddpm"),
        steps: int = typer.Option(50, "--sampling-steps", help="denoising steps per image"),
        no_filter: bool = typer.Option(False, "--no-filter", help="keep memorised / redundant images"),
        mode: str = typer.Option("paper", "--mode", help="AdaInf mix: paper (dup 10 + weak augmentation), gap "
                                 "(from measured precision), proxy (short eval grid)"),
        dup: float = typer.Option(10.0, "--dup", help="paper mode: real replication factor"),
        device: str = typer.Option("auto", "--device", help="auto (cuda if available), cpu, cuda"),
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
                widths = [int(c) for c in channels_.split(",")]
            except ValueError:
                raise ConfigError(f"--unet-channels '{channels_}': expected comma-separated integers, "
                                  f"e.g. 64,128,128") from None
            gen = ({"stage": "inflate.load", "path": pipeline} if pipeline else
                   {"stage": "inflate.train", "steps": train_steps, "batch_size": batch_size,
                    "block_out_channels": widths, "class_conditional": not unconditional, "device": device,
                    "progress": not (quiet or json_)})
            new = [gen,
                   {"stage": "inflate.generate", "n_images": n_images, "sampler": sampler, "steps": steps,
                    "filter": not no_filter, "device": device},
                   {"stage": "inflate.adainf", "mode": mode, "dup": dup}]
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
