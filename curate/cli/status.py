"""`curate status RUN_DIR`: stages, partitions done and counts of a run directory."""

from __future__ import annotations

import typer
from rich.table import Table

from curate.cli._common import Debug, Json, handle_errors, out, print_accounting, print_json


def register(app: typer.Typer) -> None:
    @app.command("status")
    def status(run_dir: str = typer.Argument(..., help="run directory"), json_: bool = Json, debug: bool = Debug) -> None:
        """Show what a run directory holds: stages, partitions done, rows, accounting."""
        from curate.stats import status as run_status

        with handle_errors(debug):
            st = run_status(run_dir)
            if json_:
                print_json(st)
                return
            t = Table(title=f"{run_dir}" + ("  [yellow](locked: a run is active)[/]" if st["locked"] else ""))
            for col in ("stage", "partitions done", "rows", "counters"):
                t.add_column(col)
            for name, s in st["stages"].items():
                rows = ", ".join(f"{k}={v}" for k, v in sorted(s["rows"].items()))
                counters = ", ".join(f"{k}={v}" for k, v in sorted(s["counters"].items()))
                t.add_row(name, str(s["partitions_done"]), rows, counters)
            out.print(t)
            if "summary" in st:
                print_accounting(st["summary"])
