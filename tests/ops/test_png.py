"""curate.ops.png: stored PNGs are valid PNGs, and the batch decoder takes only what matches the layout."""

import io

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from curate.imaging import encode_png
from curate.ops import png


@pytest.mark.parametrize("shape", [(4, 28, 28), (3, 7, 5), (2, 300, 250), (3, 17, 9, 3), (2, 160, 150, 3)])
def test_stored_pngs_open_in_pil_and_decode_in_batch(shape):
    rng = np.random.default_rng(sum(shape))
    imgs = rng.integers(0, 256, shape, dtype=np.uint8)
    files = png.encode_stored(imgs)  # 300x250 and 160x150x3 need several stored blocks
    for a, f in zip(imgs, files):
        with Image.open(io.BytesIO(f)) as im:
            im.load()  # PIL checks the CRCs and the zlib stream (Adler-32) while decoding
            np.testing.assert_array_equal(np.asarray(im), a)
    got = png.decode_stored_column(pa.array(files, pa.binary()))
    for a, g in zip(imgs, got):
        assert g.flags.c_contiguous  # (C, H, W), ready for torch.from_numpy
        np.testing.assert_array_equal(g, a[None] if a.ndim == 2 else a.transpose(2, 0, 1))


def test_rows_that_do_not_match_the_layout_are_left_to_a_png_decoder():
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, (4, 12, 12), dtype=np.uint8)
    files = png.encode_stored(imgs)
    _, pixels, _, _ = png.layout(12, 12, 1)
    filter_byte = int(pixels[12]) - 1  # the byte before row 1's first pixel
    bad = bytearray(files[2])
    bad[filter_byte] = 1  # a "Sub" filter: the raw bytes are no longer the pixels
    other = encode_png(imgs[3])  # a deflated PNG from PIL
    col = pa.array([files[0], files[1], bytes(bad), other, None, b"not a png"], pa.binary())
    got = png.decode_stored_column(col)
    np.testing.assert_array_equal(got[0][0], imgs[0])
    np.testing.assert_array_equal(got[1][0], imgs[1])
    assert got[2] is None and got[3] is None and got[4] is None and got[5] is None


def test_to_stored_keeps_pixels_and_leaves_other_flavours_alone():
    rng = np.random.default_rng(2)
    gray = rng.integers(0, 256, (9, 11), dtype=np.uint8)
    rgb = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 65535, (4, 4), dtype=np.uint16)).save(buf, format="PNG")
    sixteen = buf.getvalue()
    col = pa.array([encode_png(gray), encode_png(rgb), sixteen, None], pa.binary())
    out = png.to_stored(col).to_pylist()
    assert out[2] == sixteen and out[3] is None
    for f, a in ((out[0], gray), (out[1], rgb)):
        assert len(f) == len(png.layout(*a.shape[:2], a.shape[2] if a.ndim == 3 else 1)[0])
        with Image.open(io.BytesIO(f)) as im:
            np.testing.assert_array_equal(np.asarray(im), a)
