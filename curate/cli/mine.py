"""`curate mine RUN_DIR`: mine positives and hard negatives on an existing run (after embed / dedup)."""

from __future__ import annotations

import typer

from curate.cli._common import Debug, Json, Quiet, Scheduler, Workers, given as _given, handle_errors, out, print_json


def register(app: typer.Typer) -> None:
    @app.command("mine")
    def mine(
        run_dir: str = typer.Argument(..., help="run directory with embeddings (and dedup decisions)"),
        positives: list[str] = typer.Option(None, "--positive", "-p",
                                            help="positive kind (repeat): near_duplicate, nn, adjacent_slice, "
                                                 "same_label, cross_class; default: the stage's"),
        no_positives: bool = typer.Option(False, "--no-positives", help="skip mine.positives"),
        num_negatives: int = typer.Option(None, "--num-negatives", "-k", help="hard negatives per anchor"),
        range_min: int = typer.Option(None, "--range-min", help="skip the nearest range_min neighbours"),
        range_max: int = typer.Option(None, "--range-max", help="consider neighbours ranked below this"),
        sampling: str = typer.Option(None, "--sampling", help="top | semi_hard"),
        max_neg_ratio: float = typer.Option(None, "--max-neg-ratio", help="TopK-PercPos: negative <= ratio x positive"),
        no_guard: list[str] = typer.Option([], "--no-guard", help="disable a guard (repeat): near_duplicate, group, "
                                                                  "label, margin"),
        scheduler: str = Scheduler,
        workers: int = Workers,
        quiet: bool = Quiet,
        json_: bool = Json,
        debug: bool = Debug,
    ) -> None:
        """Add mine.positives + mine.negatives to RUN_DIR's pipeline and run them (finished stages are skipped)."""
        from curate.errors import ConfigError
        from curate.extend import extend_pipeline
        from curate.runner import Runner

        with handle_errors(debug):
            bad = set(no_guard) - {"near_duplicate", "group", "label", "margin"}
            if bad:
                raise ConfigError(f"--no-guard {sorted(bad)}: choose from near_duplicate, group, label, margin")
            # only the flags the user set override the stage defaults (declared once, in the stage)
            stages = [] if no_positives else [{"stage": "mine.positives", **_given(kinds=positives or None)}]
            stages.append({"stage": "mine.negatives", **_given(num_negatives=num_negatives, range_min=range_min,
                                                               range_max=range_max, sampling=sampling,
                                                               max_neg_ratio=max_neg_ratio),
                           **{f"guard_{g}": False for g in no_guard}})
            cfg = extend_pipeline(run_dir, stages)
            summary = Runner(cfg, run_dir, scheduler=scheduler, workers=workers,
                             progress=not (quiet or json_)).run()
            if json_:
                print_json(summary)
                return
            for name, st in summary["stages"].items():
                if "mine" in name:
                    out.print(f"{name}: {st.get('seconds')} s")
            out.print(f"pairs written; inspect with `curate inspect {run_dir} --pairs`")
