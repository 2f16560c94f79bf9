"""`curate demo-data OUT_DIR`: write the embedded medical demo images as files."""

from __future__ import annotations

import typer

from curate.cli._common import Debug, handle_errors, out


def register(app: typer.Typer) -> None:
    @app.command("demo-data")
    def demo_data(out_dir: str = typer.Argument("data/demo", help="where to write dicom/ and nifti/"),
                  debug: bool = Debug) -> None:
        """Write the demo data (pydicom + pydicom-data DICOM files, nilearn's MNI152 T1) as ordinary files."""
        from curate.demo import materialize

        with handle_errors(debug):
            dirs = materialize(out_dir)
            out.print(f"demo data written: {dirs['dicom']} (DICOM), {dirs['nifti']} (NIfTI)")
