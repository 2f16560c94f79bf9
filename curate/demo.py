"""Embedded demo data: real medical images that ship inside installed packages.

``materialize(out_dir)`` writes them as ordinary files so the demo pipeline uses
the same ingest path as a user's data:

* DICOM test files of pydicom and pydicom-data: CT, MR (one image in several
  transfer syntaxes - natural exact duplicates), multi-frame MR and US, CR, RGB
  US, and an RT structure set without pixels (quarantined: no_pixel_data);
* nilearn's bundled MNI152 T1 template as a NIfTI volume (adjacent slices are
  the near-duplicates that "Less is More" removes).
"""

from __future__ import annotations

import os
import shutil
import warnings

from curate.errors import ConfigError

DICOM_FILES = [
    "CT_small.dcm", "explicit_VR-UN.dcm", "693_UNCR.dcm",
    "MR_small.dcm", "MR_small_RLE.dcm", "MR_small_bigendian.dcm", "MR_small_jp2klossless.dcm",
    "MR_small_implicit.dcm", "emri_small.dcm", "emri_small_RLE.dcm",
    "RG1_UNCR.dcm", "RG3_UNCR.dcm", "US1_UNCR.dcm", "examples_ybr_color.dcm", "examples_rgb_color.dcm",
    "rtstruct.dcm",
]


def materialize(out_dir: str, nifti_resolution: int = 2) -> dict[str, str]:
    """Write the demo DICOM files and the MNI152 NIfTI volume under ``out_dir``; return their dirs."""
    try:
        from pydicom.data import get_testdata_file
        import nibabel as nib
        from nilearn.datasets import load_mni152_template
    except ImportError as err:
        raise ConfigError(f"the demo needs the medical extra ({err}); run: pip install -e '.[medical]'") from None
    dicom_dir, nifti_dir = os.path.join(out_dir, "dicom"), os.path.join(out_dir, "nifti")
    os.makedirs(dicom_dir, exist_ok=True)
    os.makedirs(nifti_dir, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in DICOM_FILES:
            src = get_testdata_file(name)
            if src is None:
                raise ConfigError(f"pydicom test file {name} not found; install pydicom-data (pip install pydicom-data)")
            shutil.copyfile(src, os.path.join(dicom_dir, name))
        img = load_mni152_template(resolution=nifti_resolution)
    nib.save(img, os.path.join(nifti_dir, "mni152_t1.nii.gz"))
    return {"dicom": dicom_dir, "nifti": nifti_dir}
