"""`curate validate PIPELINE.yaml`: check a pipeline without running anything."""

from __future__ import annotations

from pathlib import Path

import typer

from curate.cli._common import Debug, handle_errors, out


def register(app: typer.Typer) -> None:
    @app.command("validate")
    def validate(
        pipeline: Path = typer.Argument(..., help="pipeline YAML"),
        set_: list[str] = typer.Option(None, "--set", help="override a pipeline key: --set STAGE.KEY=VALUE"),
        debug: bool = Debug,
    ) -> None:
        """Validate a pipeline YAML: stage keys, parameter names and types, input paths."""
        from curate.config import load_pipeline

        with handle_errors(debug):
            cfg = load_pipeline(pipeline, set_ or [])
            specs = cfg.specs()
            out.print(f"{pipeline}: valid ({len(specs)} stages: {', '.join(s.key for s in specs)})")
