"""`curate inspect RUN_DIR --pairs | --dedup`: montages to eyeball what a run did."""

from __future__ import annotations

import os

import typer

from curate.cli._common import Debug, handle_errors, out


def register(app: typer.Typer) -> None:
    @app.command("inspect")
    def inspect(
        run_dir: str = typer.Argument(..., help="run directory"),
        pairs: bool = typer.Option(False, "--pairs", help="montage of anchors with their positives and hard negatives"),
        dedup: bool = typer.Option(False, "--dedup", help="montage of duplicate groups (kept vs removed)"),
        out_path: str = typer.Option(None, "--out", "-o", help="PNG to write (default: RUN_DIR/inspect_<what>.png)"),
        anchors: int = typer.Option(8, "--anchors", help="--pairs: anchors (rows) to show"),
        seed: int = typer.Option(0, "--seed", help="which anchors / groups are picked"),
        debug: bool = Debug,
    ) -> None:
        """Write a montage PNG of mined pairs (--pairs) or duplicate groups (--dedup)."""
        with handle_errors(debug):
            if not (pairs or dedup):
                out.print("nothing to inspect: pass --pairs and/or --dedup")
                raise typer.Exit(2)
            if pairs:
                from curate.stages.mine.montage import pairs_montage

                path = out_path or os.path.join(run_dir, "inspect_pairs.png")
                counts = pairs_montage(run_dir, path, anchors=anchors, seed=seed)
                out.print(f"pairs montage: {path} ({counts['anchors']} anchors, {counts['positives']} positives, "
                          f"{counts['negatives']} negatives)")
            if dedup:
                out.print("--dedup is not available in this version yet (the dedup montage is being added); "
                          "see the data card (`curate card RUN_DIR`) for duplicate-group examples")
                raise typer.Exit(2)
