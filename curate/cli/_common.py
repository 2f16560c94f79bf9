"""Shared CLI plumbing: consistent options, error reporting and exit codes."""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from curate.errors import CurateError

console = Console(stderr=True, highlight=False, no_color=not sys.stderr.isatty() or bool(os.environ.get("NO_COLOR")))
out = Console(highlight=False, no_color=not sys.stdout.isatty() or bool(os.environ.get("NO_COLOR")))

RunDir = typer.Option(None, "--run-dir", "-r", help="run directory (default: `run_dir:` of the pipeline)")
Scheduler = typer.Option(None, "--scheduler", "-s", envvar="CURATE_SCHEDULER",
                         help="'sync' (in-process), 'local' (embedded Dask LocalCluster, default) or tcp://HOST:PORT")
Workers = typer.Option(None, "--workers", "-w", min=1, help="LocalCluster workers (default: number of cores)")
Seed = typer.Option(None, "--seed", help="override the pipeline seed")
Debug = typer.Option(False, "--debug", help="show Python tracebacks")
Quiet = typer.Option(False, "--quiet", "-q", help="no progress bars, only errors")
Json = typer.Option(False, "--json", help="print machine-readable JSON on stdout")


@contextmanager
def handle_errors(debug: bool = False):
    """Turn curate errors into a message and an exit code; tracebacks only with --debug."""
    try:
        yield
    except typer.Exit:
        raise
    except CurateError as err:
        if debug:
            console.print_exception()
            cause = err.__cause__
            if cause is not None and type(cause).__name__ == "_Remote":
                console.print(str(cause))
        console.print(f"[bold red]error:[/] {escape(str(err))}", soft_wrap=True)
        raise typer.Exit(err.exit_code) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]; rerun the same command to resume")
        raise typer.Exit(130) from None
    except Exception as err:  # noqa: BLE001 - last line of defence: no traceback without --debug
        if debug:
            console.print_exception()
        console.print(f"[bold red]internal error:[/] {type(err).__name__}: {escape(str(err))} (rerun with --debug for details)", soft_wrap=True)
        raise typer.Exit(1) from None


def given(**options: Any) -> dict[str, Any]:
    """The options the user set (not None): CLI flags default to None so that only these override a
    stage's own defaults, which are declared once, in the stage's Params."""
    return {k: v for k, v in options.items() if v is not None}


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def print_accounting(summary: dict[str, Any]) -> None:
    a = summary["accounting"]
    ok = "[green]balanced[/]" if a["balanced"] else "[bold red]NOT balanced[/]"
    out.print(f"ingested {a['ingested']} = kept {a['kept']} + removed {a['removed']} + quarantined "
              f"{a['quarantined']}  ({ok})" + (f"; synthetic added {a['synthetic_added']}" if a.get("synthetic_added") else ""))
    if a.get("groups_emptied", 0) or a.get("representatives_not_kept", 0):
        out.print(f"[bold red]dedup lost content:[/] {a.get('groups_emptied', 0)} duplicate group(s) emptied, "
                  f"{a.get('representatives_not_kept', 0)} removal(s) name a representative that is not kept")
