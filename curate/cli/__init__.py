"""The `curate` command line. Thin: one small file per command, logic lives in the package."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="curate",
    help="Curate image datasets for contrastive / self-supervised pretraining: ingest, embed, dedup, "
    "mine, inflate, shard, load.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)

# Order here is the order in `curate --help`: the usual workflow first.
COMMANDS = [
    "demo_data",
    "run",
    "validate",
    "status",
    "ingest",
    "mine",
    "inflate",
    "shard",
    "inspect",
    "card",
    "train_encoder",
    "eval",
]

for _name in COMMANDS:
    importlib.import_module(f"curate.cli.{_name}").register(app)


def main() -> None:
    app()
