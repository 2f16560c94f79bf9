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
