"""`curate shard RUN_DIR`: write training shards + index.json for an existing run."""

from __future__ import annotations

import typer

from curate.cli._common import Debug, Json, Quiet, Scheduler, Workers, handle_errors, out, print_json


def register(app: typer.Typer) -> None:
    @app.command("shard")
    def shard(
        run_dir: str = typer.Argument(..., help="run directory (ingest, optionally dedup / mine / inflate done)"),
        max_rows: int = typer.Option(65536, "--max-rows", help="rows per shard at most"),
        max_bytes: int = typer.Option(256 << 20, "--max-bytes", help="bytes per shard at most"),
        seed: int = typer.Option(None, "--seed", help="shuffle seed (default: the pipeline seed)"),
        no_shuffle: bool = typer.Option(False, "--no-shuffle", help="keep the run's sample order"),
        scheduler: str = Scheduler,
        workers: int = Workers,
        quiet: bool = Quiet,
        json_: bool = Json,
        debug: bool = Debug,
    ) -> None:
        """Add (or re-parameterise) the shard stage of RUN_DIR's pipeline and run it."""
        from curate.extend import extend_pipeline
        from curate.load.index import read_index
        from curate.runner import Runner

        with handle_errors(debug):
            cfg = extend_pipeline(run_dir, [{"stage": "shard", "max_rows": max_rows, "max_bytes": max_bytes,
                                             "seed": seed, "shuffle": not no_shuffle}])
            summary = Runner(cfg, run_dir, scheduler=scheduler, workers=workers, progress=not (quiet or json_)).run()
            index = read_index(run_dir)
            if json_:
                print_json({"index": index.path, "shards": len(index.shards), "samples": index.num_samples,
                            "summary": summary})
                return
            out.print(f"{index.num_samples} samples in {len(index.shards)} shards "
                      f"({sum(s.bytes for s in index.shards) / 1e6:.1f} MB); index: {index.path}")
