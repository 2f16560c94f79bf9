"""`curate run PIPELINE.yaml`: run (or resume) a pipeline."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from curate.cli._common import Debug, Json, Quiet, RunDir, Scheduler, Seed, Workers, handle_errors, out, print_accounting, print_json


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run(
        pipeline: Path = typer.Argument(..., help="pipeline YAML (see pipelines/)"),
        run_dir: str = RunDir,
        scheduler: str = Scheduler,
        workers: int = Workers,
        seed: int = Seed,
        force: bool = typer.Option(False, "--force", help="recompute every partition, ignoring manifests"),
        dry_run: bool = typer.Option(False, "--dry-run", help="print the plan and what resume would skip; run nothing"),
        set_: list[str] = typer.Option(None, "--set", help="override a pipeline key: --set dedup_phash.threshold=8"),
        card: bool = typer.Option(True, "--card/--no-card", help="write the data card when the run finishes"),
        card_dir: str = typer.Option("data_cards", "--card-dir", help="where `--card` writes <run-name>.md"),
        quiet: bool = Quiet,
        json_: bool = Json,
        debug: bool = Debug,
    ) -> None:
        """Run a pipeline; completed partitions are skipped (resume), changed stages rerun."""
        from curate.config import load_pipeline
        from curate.runner import Runner

        with handle_errors(debug):
            cfg = load_pipeline(pipeline, set_ or [])
            if seed is not None:
                cfg.seed = seed
            runner = Runner(cfg, run_dir, scheduler=scheduler, workers=workers, force=force,
                            progress=not (quiet or json_))
            if dry_run:
                plan = runner.dry_run()
                if json_:
                    print_json({"run_dir": runner.run_dir, "stages": plan})
                    return
                t = Table(title=f"plan for {cfg.name} in {runner.run_dir}")
                for col in ("stage", "key", "kind", "reads", "writes", "partitions", "will skip", "config hash"):
                    t.add_column(col)
                for r in plan:
                    t.add_row(r["stage"], r["key"], r["kind"], ", ".join(r["inputs"]), ", ".join(r["outputs"]),
                              "?" if r["partitions"] is None else str(r["partitions"]),
                              str(r["will_skip"]), r["config_hash"])
                out.print(t)
                return
            summary = runner.run()
            card_path = None
            if card:
                from curate.card.build import build_card

                card_path = build_card(runner.run_dir, card_dir)
            if json_:
                print_json(summary)
                return
            if not quiet:
                out.print(f"run dir: {runner.run_dir}   summary: {runner.run_dir}/summary.json   "
                          f"({summary['seconds']} s)" + (f"   card: {card_path}" if card_path else ""))
            print_accounting(summary)
            if not summary["accounting"]["balanced"]:
                raise typer.Exit(1)
