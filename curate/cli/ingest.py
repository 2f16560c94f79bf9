"""`curate ingest SOURCE... --out RUN_DIR`: ingest files without writing a pipeline YAML."""

from __future__ import annotations

import typer

from curate.cli._common import Debug, Json, Quiet, Scheduler, Workers, handle_errors, out, print_accounting, print_json


def register(app: typer.Typer) -> None:
    @app.command("ingest")
    def ingest(
        sources: list[str] = typer.Argument(..., help="image folders, .npz, IDX, .parquet, DICOM dirs/files, NIfTI"),
        out_dir: str = typer.Option(..., "--out", "-o", help="run directory to write"),
        partition_size: int = typer.Option(2048, help="samples per partition"),
        scheduler: str = Scheduler,
        workers: int = Workers,
        force: bool = typer.Option(False, "--force", help="recompute every partition"),
        quiet: bool = Quiet,
        json_: bool = Json,
        debug: bool = Debug,
    ) -> None:
        """Ingest sources (type guessed from each path) into RUN_DIR/00_ingest."""
        from curate.config import PipelineConfig
        from curate.runner import Runner
        from curate.sources.infer import infer_source

        with handle_errors(debug):
            specs = [infer_source(s) for s in sources]
            cfg = PipelineConfig(name="ingest", stages=[{"stage": "ingest", "sources": specs,
                                                         "partition_size": partition_size}])
            cfg.specs()
            summary = Runner(cfg, out_dir, scheduler=scheduler, workers=workers, force=force,
                             progress=not (quiet or json_)).run()
            if json_:
                print_json(summary)
                return
            for s in specs:
                out.print(f"  {s['type']:<8} {s.get('path') or s.get('images')}")
            print_accounting(summary)
