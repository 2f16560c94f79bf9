"""Canonical images: 8-bit, gray (H, W) or RGB (H, W, 3), stored as PNG bytes.

Every source is normalised here so hashes, embeddings and shards see one form:

* bool / 8-bit integers are kept; 16-bit and wider integers and floats are
  min-max scaled to 0..255 (DICOM/NIfTI get windowing before this);
* gray+alpha and RGBA are composited over black, palette images expanded;
* single-channel arrays are gray, 3-channel RGB; anything else is an error.
"""

from __future__ import annotations

import hashlib
import io as _io
import struct
import zlib
from typing import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from curate.errors import SampleError

Image.MAX_IMAGE_PIXELS = None  # we enforce our own, configurable limit


def to_uint8(arr: np.ndarray) -> np.ndarray:
    """Scale any numeric array to uint8 (min-max for non-8-bit data)."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise SampleError("unsupported_dtype", f"pixel dtype {arr.dtype} is not numeric")
    a = arr.astype(np.float64)
    if not np.isfinite(a).all():
        raise SampleError("nan_values", f"{int((~np.isfinite(a)).sum())} NaN/inf pixel values")
    if np.issubdtype(arr.dtype, np.signedinteger) and arr.dtype.itemsize == 1:
        a = a + 128.0
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros(arr.shape, np.uint8)
    return np.clip(np.rint((a - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def canonical(arr: np.ndarray, max_pixels: int | None = None) -> np.ndarray:
    """Return the canonical (H, W) or (H, W, 3) uint8 form of an image array."""
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # CHW -> HWC
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (2, 3, 4)):
        raise SampleError("bad_shape", f"array of shape {arr.shape} is not an image")
    h, w = arr.shape[:2]
    if h == 0 or w == 0:
        raise SampleError("empty_image", f"image has {h}x{w} pixels")
    if max_pixels and h * w > max_pixels:
        raise SampleError("too_large", f"{h}x{w} = {h * w} pixels exceeds max_pixels={max_pixels}")
    if arr.ndim == 3 and arr.shape[-1] in (2, 4):  # composite alpha over black
        color, alpha = arr[..., :-1], arr[..., -1:]
        a = to_uint8(alpha).astype(np.float32) / 255.0 if alpha.dtype != np.uint8 else alpha.astype(np.float32) / 255.0
        arr = np.rint(to_uint8(color).astype(np.float32) * a).astype(np.uint8)
        if arr.shape[-1] == 1:
            arr = arr[..., 0]
        return np.ascontiguousarray(arr)
    return np.ascontiguousarray(to_uint8(arr))


def from_pil(img: Image.Image, max_pixels: int | None = None) -> np.ndarray:
    """Decode a PIL image (any mode, 8/16-bit) to canonical form."""
    w, h = img.size
    if max_pixels and w * h > max_pixels:
        raise SampleError("too_large", f"{h}x{w} = {h * w} pixels exceeds max_pixels={max_pixels}")
    mode = img.mode
    if mode == "P" or mode == "PA":
        img = img.convert("RGBA")
    elif mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
        img = img.convert("L" if mode == "1" else "RGB")
    elif mode.startswith("I;16") or mode == "I" or mode == "F":
        return canonical(np.array(img), max_pixels)
    return canonical(np.asarray(img), max_pixels)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def png_raw_size(w: int, h: int, depth: int, color_type: int, interlace: int) -> int:
    """Bytes of filtered scanlines (filter byte included) that a PNG's IDAT must inflate to (PNG spec 7.2, 8.2)."""
    bits = depth * _PNG_CHANNELS[color_type]

    def size(pw: int, ph: int) -> int:
        return ph * (1 + (pw * bits + 7) // 8) if pw and ph else 0

    if not interlace:
        return size(w, h)
    return sum(size((w - x0 + dx - 1) // dx if w > x0 else 0, (h - y0 + dy - 1) // dy if h > y0 else 0)
               for x0, y0, dx, dy in _ADAM7)


def check_png(data: bytes, max_pixels: int | None = None, inflate: bool = True) -> tuple[int, int, int, int, int]:
    """Structural check of a PNG before decoding: every chunk complete with a matching CRC-32, IHDR valid and
    within ``max_pixels``, the IDAT zlib stream complete and inflating to the size IHDR declares, IEND present.

    PIL decodes a PNG whose IDAT is short as a zero-filled image and never checks IDAT CRCs, so a file cut or
    damaged in the middle would be kept with made-up pixels. Raises :class:`SampleError` with reason
    ``truncated``, ``crc_mismatch``, ``too_large`` or ``corrupt_image``. The IDAT stream is inflated in
    1 MiB steps and only counted, so a decompression bomb costs time bounded by IHDR, never memory;
    ``inflate=False`` skips that step (chunks, CRCs, IHDR and IEND only: for a decoder that checks the
    stream itself). Returns IHDR's (width, height, bit depth, colour type, interlace).
    """
    n, pos = len(data), 8
    expected, inflater, got, seen_iend, ihdr = None, zlib.decompressobj(), 0, False, False
    while pos < n:
        if pos + 8 > n:
            raise SampleError("truncated", f"PNG ends inside a chunk header at byte {pos} of {n}")
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if length > 0x7FFFFFFF:
            raise SampleError("corrupt_image", f"PNG chunk {kind!r} declares {length} bytes (over 2^31-1)")
        end = pos + 12 + length
        if end > n:
            raise SampleError("truncated", f"PNG ends inside chunk {kind.decode('latin-1')!r} "
                                           f"({n - pos - 8} of {length + 4} bytes present)")
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:end])
        if zlib.crc32(kind + body) != crc:
            raise SampleError("crc_mismatch", f"PNG chunk {kind.decode('latin-1')!r} at byte {pos}: CRC-32 mismatch")
        if not ihdr:
            if kind != b"IHDR" or length != 13:
                raise SampleError("corrupt_image", "PNG does not start with a 13-byte IHDR chunk")
            w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            if w == 0 or h == 0:
                raise SampleError("empty_image", f"PNG IHDR declares {h}x{w} pixels")
            if ctype not in _PNG_CHANNELS or interlace > 1:
                raise SampleError("corrupt_image", f"PNG IHDR has colour type {ctype}, interlace {interlace}")
            if max_pixels and w * h > max_pixels:
                raise SampleError("too_large", f"PNG IHDR declares {h}x{w} = {h * w} pixels, exceeds "
                                               f"max_pixels={max_pixels}")
            expected, ihdr = png_raw_size(w, h, depth, ctype, interlace), True
        elif kind == b"IDAT" and inflate and got <= expected and not inflater.eof:
            buf = body
            try:
                while buf and got <= expected and not inflater.eof:
                    got += len(inflater.decompress(buf, 1 << 20))
                    buf = inflater.unconsumed_tail
            except zlib.error as err:
                raise SampleError("corrupt_image", f"PNG IDAT is not a valid zlib stream ({err})") from None
        elif kind == b"IEND":
            seen_iend = True
            break
        pos = end
    if not ihdr:
        raise SampleError("truncated", "PNG has no IHDR chunk")
    if inflate and got < expected:
        raise SampleError("truncated", f"PNG IDAT inflates to {got} of the {expected} bytes IHDR declares "
                                       f"({h}x{w}); the image data is cut short")
    if not seen_iend:
        raise SampleError("truncated", f"PNG has no IEND chunk (file cut after byte {n})")
    return w, h, depth, ctype, interlace


_SIGNATURES = ((PNG_SIGNATURE, "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
               (b"GIF87a", "GIF"), (b"GIF89a", "GIF"), (b"BM", "BMP"), (b"RIFF", "WebP"))


def check_jpeg(data: bytes) -> None:
    """A JPEG must end with an EOI marker (FFD9) somewhere after its start; libjpeg fills a cut scan with grey."""
    if data.rfind(b"\xff\xd9", 2) == -1:
        raise SampleError("truncated", "JPEG has no end-of-image marker (file cut short)")


def open_image(data: bytes, max_pixels: int | None = None) -> Image.Image:
    """A lazily decoded PIL image from encoded bytes, after the checks that PIL does not do:
    empty bytes (``empty_file``), PNG structure and CRCs (:func:`check_png`), JPEG end marker, unknown
    formats (``not_an_image``), header dimensions over ``max_pixels`` (``too_large``, before decoding)."""
    if not data:
        raise SampleError("empty_file", "0 bytes")
    if data[:8] == PNG_SIGNATURE:
        check_png(data, max_pixels)
    elif data[:3] == b"\xff\xd8\xff":
        check_jpeg(data)
    try:
        img = Image.open(_io.BytesIO(data))
    except UnidentifiedImageError:
        fmt = next((name for magic, name in _SIGNATURES if data.startswith(magic)), None)
        if fmt:  # the signature of a format we read, but a header PIL cannot parse: cut or damaged
            raise SampleError("corrupt_image", f"starts like a {fmt} file but its header cannot be parsed "
                                               f"(truncated or damaged)") from None
        raise SampleError("not_an_image", "not a readable image format (PNG/JPEG/TIFF/BMP expected)") from None
    except (OSError, SyntaxError, ValueError, struct.error, EOFError) as err:
        raise _decode_error(err) from None
    w, h = img.size
    if w <= 0 or h <= 0:
        raise SampleError("empty_image", f"image header declares {h}x{w} pixels")
    if max_pixels and w * h > max_pixels:
        raise SampleError("too_large", f"{h}x{w} = {h * w} pixels exceeds max_pixels={max_pixels}")
    return img


def _decode_error(err: Exception) -> SampleError:
    text = str(err)
    reason = "truncated" if "truncat" in text.lower() or isinstance(err, EOFError) else "corrupt_image"
    return SampleError(reason, f"cannot decode image: {type(err).__name__}: {text}")


def decode_frames(data: bytes, max_pixels: int | None = None) -> Iterator[np.ndarray]:
    """Every frame (TIFF pages, GIF frames) of encoded image ``data`` in canonical form; raises
    :class:`SampleError` for an unusable file (see :func:`open_image`)."""
    if data[:8] == PNG_SIGNATURE:
        # 8-bit gray / RGB (most datasets): chunks and CRCs here, then libspng, which rejects a short or
        # broken IDAT stream itself and decodes ~3x faster than PIL; anything it declines goes through
        # the full check (for the reason) and PIL
        w, h, depth, ctype, interlace = check_png(data, max_pixels, inflate=False)
        animated = b"acTL" in data[: data.find(b"IDAT")]  # APNG: every frame, through PIL
        arr = spng_load(data) if depth == 8 and ctype in (0, 2) and not interlace and not animated else None
        if arr is not None and arr.shape[:2] == (h, w):
            yield canonical(arr, max_pixels)
            return
    img = open_image(data, max_pixels)
    n = getattr(img, "n_frames", 1)
    try:
        for i in range(n):
            if n > 1:
                img.seek(i)
            img.load()
            yield from_pil(img, max_pixels)
    except SampleError:
        raise
    except (OSError, SyntaxError, ValueError, struct.error, EOFError, MemoryError, ZeroDivisionError) as err:
        raise _decode_error(err) from None


def decode_image_bytes(data: bytes, max_pixels: int | None = None) -> np.ndarray:
    """The first frame of encoded image ``data`` in canonical form (see :func:`decode_frames`)."""
    return next(iter(decode_frames(data, max_pixels)))


def pixel_hash(arr: np.ndarray) -> str:
    """Content hash of canonical pixels including the shape."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr(arr.shape).encode())
    h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def sample_id(pix_hash: str, source_uri: str, source_index: int) -> str:
    key = f"{pix_hash}|{source_uri}|{source_index}".encode("utf-8", "surrogateescape")  # any file name
    return hashlib.blake2b(key, digest_size=12).hexdigest()


def encode_png(arr: np.ndarray, compress_level: int = 1) -> bytes:
    buf = _io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


try:  # libspng decodes small PNGs ~3x faster than PIL; PIL stays the reference and the fallback
    import pyspng as _spng
except ImportError:  # pragma: no cover - depends on the environment
    _spng = None


def spng_load(data: bytes) -> np.ndarray | None:
    """libspng's uint8 array for PNG ``data``; None when libspng is missing, declines the file, or
    returns another dtype (16-bit): the caller falls back to PIL."""
    if _spng is None:
        return None
    try:
        arr = _spng.load(data)
    except Exception:  # noqa: BLE001 - an unusual PNG flavour: PIL decides
        return None
    return arr if arr.dtype == np.uint8 else None


def decode_png(data: bytes) -> np.ndarray:
    """Canonical bytes back to (H, W) or (H, W, 3) uint8."""
    # fast path for what canonical PNGs are: 8-bit gray / RGB (IHDR bit depth and colour type)
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[24:26] in (b"\x08\x00", b"\x08\x02"):
        arr = spng_load(data)
        if arr is not None and (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
            return arr
    with Image.open(_io.BytesIO(data)) as img:
        return np.asarray(img)


def decode_resize(data: bytes | np.ndarray, size: int | None = None, channels: int | None = None) -> np.ndarray:
    """One image as uint8 (H, W) or (H, W, 3): decoded, forced to ``channels``, then resized to ``size``.

    ``data`` is PNG bytes (8-bit gray / RGB through libspng, anything else through PIL, PNG only) or an
    already decoded canonical array. ``channels`` 1 is PIL's ``L`` luma, 3 is ``RGB`` (gray replicated);
    None keeps the image's own. ``size`` resizes to ``size x size`` with PIL bilinear; None keeps it.
    An image already in that form is returned as decoded. The one decode path of ``embed``, the
    diffusion generator's training set, :func:`curate.train.images_tensor` and the shard loader.
    """
    arr = data if isinstance(data, np.ndarray) else None
    if arr is None and data[:8] == b"\x89PNG\r\n\x1a\n" and data[24:26] in (b"\x08\x00", b"\x08\x02"):
        rgb = data[25] == 2  # IHDR: width, height, bit depth 8, colour type 0 (gray) / 2 (RGB)
        w, h = struct.unpack(">II", data[16:24])
        if (channels is None or rgb == (channels == 3)) and (size is None or (h, w) == (size, size)):
            arr = spng_load(data)  # already in its final form: libspng alone (PIL would only copy)
            if arr is not None and not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
                arr = None
    if arr is not None:
        if ((channels is None or (arr.ndim == 3) == (channels == 3))
                and (size is None or arr.shape[:2] == (size, size))):
            return arr
        return _convert_resize(Image.fromarray(arr), size, channels)
    with Image.open(_io.BytesIO(data), formats=["PNG"]) as img:
        return _convert_resize(img, size, channels)


def _convert_resize(img: Image.Image, size: int | None, channels: int | None) -> np.ndarray:
    mode = {1: "L", 3: "RGB"}.get(channels, "RGB" if img.mode == "P" else None)  # palettes expanded
    if mode is not None and img.mode != mode:
        img = img.convert(mode)
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    return np.array(img)
