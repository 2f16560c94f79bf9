"""`curate inspect RUN_DIR --pairs | --dedup`: pictures to eyeball what a run did. One flag per view."""

from __future__ import annotations

import os

import typer

from curate.cli._common import Debug, handle_errors, out


def register(app: typer.Typer) -> None:
    @app.command("inspect")
    def inspect(
        run_dir: str = typer.Argument(..., help="run directory"),
        pairs: bool = typer.Option(False, "--pairs", help="montage of anchors with their positives and hard negatives"),
        dedup: bool = typer.Option(False, "--dedup", help="threshold help: nearest-neighbour Hamming / cosine "
                                   "histograms, kept share vs t and eps, montages of near-duplicate pairs"),
        out_path: str = typer.Option(None, "--out", "-o", help="--pairs: PNG to write (default RUN_DIR/inspect_pairs.png); "
                                     "--dedup: directory (default RUN_DIR/inspect/dedup); a directory serves both"),
        anchors: int = typer.Option(8, "--anchors", help="--pairs: anchors (rows) to show"),
        seed: int = typer.Option(0, "--seed", help="which anchors / groups are picked"),
        max_items: int = typer.Option(20000, "--max-items", min=2, help="--dedup: deterministic subsample above this"),
        debug: bool = Debug,
    ) -> None:
        """Write montages of mined pairs (--pairs) and dedup threshold plots (--dedup) as PNG."""
        with handle_errors(debug):
            if not (pairs or dedup):
                out.print("nothing to inspect: pass --pairs and/or --dedup")
                raise typer.Exit(2)
            out_is_png = bool(out_path) and out_path.lower().endswith(".png")
            if pairs:
                from curate.stages.mine.montage import pairs_montage

                path = out_path if out_is_png else os.path.join(out_path or run_dir, "inspect_pairs.png")
                counts = pairs_montage(run_dir, path, anchors=anchors, seed=seed)
                out.print(f"pairs montage: {path} ({counts['anchors']} anchors, {counts['positives']} positives, "
                          f"{counts['negatives']} negatives)")
            if dedup:
                from curate.inspect.dedup import inspect_dedup

                report = inspect_dedup(run_dir, None if out_is_png else out_path, max_items)
                for part, knob in (("hamming", "t"), ("cosine", "eps")):
                    r = report[part]
                    if "skipped" in r:
                        out.print(f"dedup {part}: skipped ({r['skipped']})", soft_wrap=True)
                        continue
                    curve = ", ".join(f"{knob}={k}: {v:.1%}" for k, v in r["keep_curve"].items())
                    out.print(f"dedup {part}: kept share {curve}", soft_wrap=True)
                    for path in r["files"].values():
                        out.print(f"  wrote {path}", soft_wrap=True)
                out.print(f"  numbers: {os.path.join(report['out_dir'], 'thresholds.json')}", soft_wrap=True)
