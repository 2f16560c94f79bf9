"""`curate card RUN_DIR`: write the data card of a run."""

from __future__ import annotations

import typer

from curate.cli._common import Debug, handle_errors, out


def register(app: typer.Typer) -> None:
    @app.command("card")
    def card(
        run_dir: str = typer.Argument(..., help="run directory with a summary.json"),
        out_dir: str = typer.Option("data_cards", "--out", "-o", help="directory for <name>.md and <name>/*.png"),
        name: str = typer.Option(None, "--name", help="card name (default: the run directory's name)"),
        license: str = typer.Option("other", "--license", help="license id for the card header"),
        debug: bool = Debug,
    ) -> None:
        """Write a data card: counts, removal reasons, duplicate montages, similarity plots, shards, privacy."""
        from curate.card.build import build_card

        with handle_errors(debug):
            path = build_card(run_dir, out_dir, name, license)
            out.print(f"data card: {path}")
