"""Image folders: PNG / JPEG / TIFF / BMP (any file is tried; non-images are quarantined).

Labels come from the first sub-folder under the root (``root/<label>/.../x.png``),
the ImageFolder convention. A ``<stem>.txt`` file next to an image is its paired text.
Multi-page TIFFs give one sample per page.
"""

from __future__ import annotations

import io
import os
from typing import Iterator

from PIL import Image, UnidentifiedImageError

from curate import imaging
from curate.errors import SampleError
from curate.samples import sample_row
from curate.sources import Bad, ReadOptions, chunks, file_sha256

TEXT_SUFFIXES = {".txt"}
SKIP_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}


def plan(src, partition_size: int) -> list[dict]:
    root = src.path
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or name in SKIP_NAMES:
                continue
            if src.text_sidecar and os.path.splitext(name)[1].lower() in TEXT_SUFFIXES:
                continue
            files.append(os.path.join(dirpath, name))
    rels = [os.path.relpath(f, root) for f in files]
    classes = sorted({r.split(os.sep)[0] for r in rels if os.sep in r}) if src.labels == "subfolders" else []
    index = {c: i for i, c in enumerate(classes)}
    entries = []
    for f, r in zip(files, rels):
        name = r.split(os.sep)[0] if os.sep in r and classes else None
        entries.append((f, index.get(name) if name else None, name))
    return [{"files": c, "text_sidecar": src.text_sidecar} for c in chunks(entries, partition_size)]


def _frames(img: Image.Image) -> Iterator[Image.Image]:
    n = getattr(img, "n_frames", 1)
    for i in range(n):
        if n > 1:
            img.seek(i)
        yield img


def read(payload: dict, opts: ReadOptions) -> Iterator:
    for path, label, label_name in payload["files"]:
        try:
            digest, data = file_sha256(path)
        except OSError as err:
            yield Bad(SampleError("unreadable", f"cannot read file: {err}"), path)
            continue
        text = None
        if payload["text_sidecar"]:
            side = os.path.splitext(path)[0] + ".txt"
            if os.path.exists(side):
                with open(side, encoding="utf-8", errors="replace") as f:
                    text = f.read().strip()
        if not data:
            yield Bad(SampleError("empty_file", "file has 0 bytes"), path)
            continue
        try:
            img = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            yield Bad(SampleError("not_an_image", "not a readable image format (PNG/JPEG/TIFF/BMP expected)"), path)
            continue
        w, h = img.size
        if opts.max_pixels and w * h > opts.max_pixels:
            yield Bad(SampleError("too_large", f"{h}x{w} = {h * w} pixels exceeds max_pixels={opts.max_pixels}"), path)
            continue
        try:
            for i, frame in enumerate(_frames(img)):
                frame.load()
                arr = imaging.from_pil(frame, opts.max_pixels)
                yield sample_row(arr, path, i, label=label, label_name=label_name, text=text, source_hash=digest)
        except SampleError as err:
            yield Bad(err, path)
        except (OSError, SyntaxError, ValueError) as err:
            reason = "truncated" if "truncat" in str(err).lower() else "corrupt_image"
            yield Bad(SampleError(reason, f"cannot decode image: {err}"), path)
