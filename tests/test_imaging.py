"""curate.imaging.decode_png: the libspng fast path returns exactly what PIL returns, for every flavour."""

import io

import numpy as np
import pytest
from PIL import Image

from curate import imaging


@pytest.mark.parametrize("mode", ["L", "RGB", "P", "RGBA", "I;16", "LA"])
def test_decode_png_equals_pil(mode):
    rng = np.random.default_rng(0)
    base = Image.fromarray(rng.integers(0, 256, (9, 7, 3), dtype=np.uint8))
    img = base.convert(mode) if mode != "I;16" else Image.fromarray(rng.integers(0, 65535, (9, 7), dtype=np.uint16))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    got = imaging.decode_png(buf.getvalue())
    want = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("rgb", [False, True])
@pytest.mark.parametrize("size, channels", [(None, None), (20, None), (20, 1), (20, 3), (None, 1), (None, 3)])
def test_decode_resize_is_pil_convert_then_bilinear(rgb, size, channels):
    rng = np.random.default_rng(3)
    arr = rng.integers(0, 256, (28, 28, 3) if rgb else (28, 28), dtype=np.uint8)
    data = imaging.encode_png(arr)
    img = Image.open(io.BytesIO(data))
    if channels:
        img = img.convert("RGB" if channels == 3 else "L")
    if size:
        img = img.resize((size, size), Image.BILINEAR)
    ref = np.asarray(img)
    out = imaging.decode_resize(data, size, channels)
    assert out.dtype == np.uint8 and np.array_equal(out, ref)
    assert np.array_equal(imaging.decode_resize(arr, size, channels), ref)  # decoded arrays take the same path
    if size is None and channels in (None, 3 if rgb else 1):
        assert np.array_equal(out, arr)


def test_decode_resize_expands_palettes_and_rejects_non_png():
    rng = np.random.default_rng(4)
    rgb = Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).convert("P")
    buf = io.BytesIO()
    rgb.save(buf, format="PNG")
    assert np.array_equal(imaging.decode_resize(buf.getvalue()), np.asarray(rgb.convert("RGB")))
    jpg = io.BytesIO()
    rgb.convert("RGB").save(jpg, format="JPEG")
    with pytest.raises(Exception):
        imaging.decode_resize(jpg.getvalue())
