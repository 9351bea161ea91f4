"""Decoding any image a user hands us into one RGB uint8 array, or one sentence saying why not.

Every path into the detector (upload, webcam frame, CLI file, folder scan) goes through
`read_image`, so the checks live here once:
- only formats whose decode cost follows their pixel count are opened (ACCEPTED_FORMATS: JPEG, PNG,
  WebP, BMP, GIF's first frame); JPEG 2000, TIFF, PSD, ICO, ... get a sentence naming the format;
- the pixel count and the bytes those pixels take (pixels x bytes per pixel, from the header's mode
  and bit depth) are checked before any pixel is decoded (decompression bombs, 16-bit RGBA);
- decodes of large images take one of DECODE_SLOTS, waiting at most DECODE_WAIT_S, so concurrent
  requests neither multiply the memory nor hold every worker (a busy server says so);
- large images are shrunk while decoding (JPEG draft) and then to `max_side` BEFORE any float or
  16-bit conversion, and the conversions run in bands of rows, so memory stays bounded;
- EXIF orientation is applied; grey, palette, 16-bit, float and alpha images become plain RGB;
- transparent pixels are composited on WHITE (dropping alpha would show whatever colour the
  transparent pixels happen to hold, often black or garbage).
"""

from __future__ import annotations

import io
import threading
import warnings
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from audience.data.contained import missing_reason
from audience.errors import AudienceError, shorten

MAX_PIXELS = 40_000_000  # header check: a larger image is refused before decoding (a 16-bit RGBA one is 320 MB)
# ...and the bytes its decoded pixels take (pixels x bytes per pixel as the header declares them): an 8-bit
# RGBA image at the pixel limit, so a 6300 x 6300 16-bit RGBA PNG (318 MB, though 300 KB on disk) is refused.
MAX_DECODE_BYTES = 160_000_000
LARGE_PIXELS = 4_000_000  # decodes of images above this many pixels take one of DECODE_SLOTS
DECODE_SLOTS = 2  # at most this many large decodes at once: bounds the memory and CPU of concurrent requests
DECODE_WAIT_S = 0.5  # a large image waits at most this long for a slot, then gets a sentence (frees its worker)
_decode_slots = threading.BoundedSemaphore(DECODE_SLOTS)
# Formats whose decode cost follows the pixel count checked above (and gradio's upload limit); the others
# (JPEG 2000: 12.7 s and 600 MB for a 3 KB file; TIFF's and PSD's compressions, ICO, multi-frame formats)
# are refused with a sentence naming the format. PIL opens many phones' JPEGs as MPO, through JPEG.
ACCEPTED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "BMP", "GIF")  # JPEG includes MPO
ACCEPTED_NAMES = "JPEG, PNG, WebP, BMP or GIF (its first frame)"
_ROW_BAND = 512  # conversions to float run on this many rows at a time: their temporaries stay small
MAX_SIDE = 4096  # longer images are downscaled to this longest side
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})

ImageSource = str | Path | bytes | np.ndarray | Image.Image
# What opening or decoding a file that is not a readable image raises (UnidentifiedImageError and a
# missing file are OSErrors; a corrupt header can be a SyntaxError). The one list the training
# cache, the EDA statistics and this module catch.
IMAGE_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def unreadable_reason(error: BaseException) -> str:
    """Why a file is not a readable image, for 'PATH: not a readable image (REASON).'"""
    if isinstance(error, FileNotFoundError):
        return "the file does not exist"
    if isinstance(error, UnidentifiedImageError):  # PIL's own message repeats the path
        return "not an image format PIL can decode"
    return f"{type(error).__name__}: {error}"


def read_image(source: ImageSource, max_pixels: int = MAX_PIXELS, max_side: int = MAX_SIDE) -> np.ndarray:
    """Decode `source` (path, encoded bytes, array or PIL image) to a C-contiguous RGB uint8 HxWx3 array.

    Arrays are taken as RGB(A) or grey; uint16 is scaled from 0-65535, floats from 0-1. The longest
    side of the result is at most `max_side`. Raises AudienceError with one sentence on bad input.
    """
    if isinstance(source, np.ndarray):
        return _shrink_array(rgb_from_array(source, "the image array"), max_side)
    if isinstance(source, Image.Image):
        return _decode(source, "the image", max_pixels, max_side)
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        if not data:
            raise AudienceError("image data: it is empty (0 bytes)")
        return _open_and_decode(io.BytesIO(data), "image data", max_pixels, max_side)
    if isinstance(source, str | Path):
        path = Path(source)
        name = path.name or str(path)
        if not path.exists():
            raise AudienceError(f"{source}: {missing_reason(path)}")
        if path.is_dir():
            raise AudienceError(f"{source}: is a folder, not an image file")
        if not path.is_file():  # a pipe would block the open until someone writes to it; a device never ends
            raise AudienceError(f"{shorten(source)}: is not a regular file (a pipe, a device or a socket), "
                                "so it is not read as an image")
        try:
            with path.open("rb") as handle:
                if path.stat().st_size == 0:
                    raise AudienceError(f"{name}: the file is empty (0 bytes)")
                return _open_and_decode(handle, name, max_pixels, max_side)
        except OSError as exc:  # permission denied, I/O error, ...
            raise AudienceError(f"{name}: cannot be read ({(exc.strerror or str(exc)).lower()})") from exc
    raise AudienceError(f"cannot read an image from a {type(source).__name__} (give a path, bytes or an array)")


def list_images(paths: str | Path | Iterable[str | Path], recursive: bool = False) -> list[Path]:
    """Expand folders into their image files (by extension, sorted, hidden files skipped); files stay as given.

    Order follows `paths`; duplicates are dropped. A path that does not exist raises AudienceError.
    """
    if isinstance(paths, str | Path):
        paths = [paths]
    found: list[Path] = []
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            candidates = path.rglob("*") if recursive else path.iterdir()
            found += sorted(
                p
                for p in candidates
                if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and not p.name.startswith(".")
            )
        elif path.exists():
            found.append(path)
        else:
            raise AudienceError(f"{entry}: {missing_reason(path, 'no such file or folder')}")
    return list(dict.fromkeys(found))


def rgb_from_array(array: np.ndarray, name: str = "the image array") -> np.ndarray:
    """Convert an HxW, HxWx1, HxWx3 or HxWx4 array of any usual dtype to C-contiguous RGB uint8."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise AudienceError(f"{name}: shape {array.shape} is not an image (expected HxW, HxWx3 or HxWx4)")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise AudienceError(f"{name}: the image is empty (0 pixels)")
    array = _to_uint8(array, name)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    elif array.shape[2] == 4:
        array = _composite_on_white(array)
    return np.ascontiguousarray(array)


def _to_uint8(array: np.ndarray, name: str) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype == np.uint16:
        return _from_16bit(array)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise AudienceError(f"{name}: the image holds NaN or infinite values")
        low, high = float(array.min()), float(array.max())
        if low < 0.0 or high > 1.0:
            raise AudienceError(f"{name}: a float image must hold values from 0 to 1 (found {low:g} to {high:g})")
        return np.rint(array * 255.0).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        low, high = int(array.min()), int(array.max())
        if low >= 0 and high <= 255:
            return array.astype(np.uint8)
        if low >= 0 and high <= 65535:
            return _from_16bit(array)
        raise AudienceError(f"{name}: integer pixel values {low} to {high} fit neither 8 nor 16 bits")
    raise AudienceError(f"{name}: pixels of type {array.dtype} are not supported")


def _from_16bit(array: np.ndarray) -> np.ndarray:
    # 65535 / 255 == 257 exactly, so this maps the full 16-bit range onto the full 8-bit range.
    out = np.empty(array.shape, np.uint8)
    for start in range(0, array.shape[0], _ROW_BAND):  # in bands: the float copy never holds the whole image
        out[start:start + _ROW_BAND] = np.rint(array[start:start + _ROW_BAND].astype(np.float32) / 257.0)
    return out


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    out = np.empty((*rgba.shape[:2], 3), np.uint8)
    for start in range(0, rgba.shape[0], _ROW_BAND):  # in bands: 4 float copies of a 4096 px image were 700 MB
        band = rgba[start:start + _ROW_BAND]
        alpha = band[:, :, 3:4].astype(np.float32) / 255.0
        rgb = band[:, :, :3].astype(np.float32)
        out[start:start + _ROW_BAND] = np.rint(rgb * alpha + 255.0 * (1.0 - alpha))
    return out


def _open_and_decode(handle, name: str, max_pixels: int, max_side: int) -> np.ndarray:
    try:
        # Pillow's own bomb check only warns between its limit and twice it; make that an error
        # here too, without touching the global Image.MAX_IMAGE_PIXELS other code may rely on.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(handle, formats=ACCEPTED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's limits (a warning above 89 M pixels, an error above 179 M) are above ours: quote ours
        raise AudienceError(
            f"{name}: the image has too many pixels to decode safely (more than the limit of {max_pixels:,} pixels)"
        ) from exc
    except UnidentifiedImageError as exc:
        refused = _refused_format(handle)
        if refused:
            raise AudienceError(f"{name}: {refused} images are not accepted (their decoding cost does not follow "
                                f"their size); send a {ACCEPTED_NAMES}") from exc
        raise AudienceError(f"{name}: not an image file (cannot identify image format)") from exc
    except IMAGE_ERRORS as exc:  # the bomb and unknown-format cases are answered above
        raise AudienceError(f"{name}: the image header is corrupt ({exc})") from exc
    with image:
        return _decode(image, name, max_pixels, max_side, owned=True)


def _refused_format(handle) -> str | None:
    """The format of a file PIL can open but ACCEPTED_FORMATS leaves out (from its header: PIL opens
    lazily, nothing is decoded), or None when it is no image PIL knows."""
    try:
        handle.seek(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(handle) as image:
                format_id = image.format or "this"
    except Exception:  # noqa: BLE001 - whatever a plugin raises on a file it half-knows: not an image
        return None
    return {"JPEG2000": "JPEG 2000"}.get(format_id, format_id)


def bytes_per_pixel(image: Image.Image) -> int:
    """The bytes one decoded pixel takes, from the header: channels x bytes per channel, where a channel
    is 16 bits when the mode or the raw mode says so (PIL reads a 16-bit RGBA PNG as 8-bit RGBA, but
    from 16-bit data), 32 bits for the I and F modes, at least 1 byte (1-bit and palette images)."""
    mode = image.mode
    if mode in ("I", "F"):
        return 4
    channel = 2 if ";16" in mode or any(";16" in str(_raw_mode(tile)) for tile in (image.tile or [])) else 1
    return max(1, len(image.getbands()) * channel)


def _raw_mode(tile) -> str:
    args = getattr(tile, "args", None) if not isinstance(tile, tuple) else (tile[3] if len(tile) > 3 else None)
    if isinstance(args, tuple) and args:
        args = args[0]
    return args if isinstance(args, str) else ""


def check_decode_bytes(image: Image.Image, name: str, max_bytes: int = MAX_DECODE_BYTES) -> None:
    """Refuse an image whose decoded pixels (as the header declares them) would take more than
    `max_bytes`, before any pixel is decoded."""
    width, height = image.size
    each = bytes_per_pixel(image)
    if width * height * each > max_bytes:
        raise AudienceError(
            f"{name}: the image is {width} x {height} pixels of {each} bytes each "
            f"({width * height * each / 1e6:,.0f} MB decoded), more than the limit of {max_bytes / 1e6:,.0f} MB"
        )


def check_pixel_count(image: Image.Image, name: str, max_pixels: int = MAX_PIXELS) -> None:
    """Refuse an image whose header declares more than `max_pixels`, before any pixel is decoded."""
    width, height = image.size
    if width * height > max_pixels:
        raise AudienceError(
            f"{name}: the image is {width} x {height} pixels, more than the limit of {max_pixels:,} pixels"
        )


def _decode(image: Image.Image, name: str, max_pixels: int, max_side: int, owned: bool = False) -> np.ndarray:
    """`owned`: the image was opened here, so it may be changed in place (never a caller's image)."""
    check_pixel_count(image, name, max_pixels)
    width, height = image.size
    if width == 0 or height == 0:
        raise AudienceError(f"{name}: the image is empty (0 pixels)")
    if owned and image.format in ("JPEG", "MPO") and max(width, height) > max_side:
        # Decode at 1/2, 1/4 or 1/8 scale straight from the DCT: the full image never exists in memory
        # (draft only changes what load() will do, so the byte budget below counts the reduced size).
        ratio = max_side / max(width, height)
        image.draft(None, (max(1, round(width * ratio)), max(1, round(height * ratio))))
        width, height = image.size
    if owned:  # a caller's PIL image is decoded already: its bytes are spent
        check_decode_bytes(image, name)
    if width * height <= LARGE_PIXELS:
        return _decode_pixels(image, name, max_side, owned)
    if not _decode_slots.acquire(timeout=DECODE_WAIT_S):
        raise AudienceError(
            f"{name}: the server is decoding {DECODE_SLOTS} other large images; try again in a few seconds, or "
            f"send an image of at most {LARGE_PIXELS:,} pixels"
        )
    try:
        return _decode_pixels(image, name, max_side, owned)
    finally:
        _decode_slots.release()
        release_memory()


def release_memory() -> None:
    """Hand freed heap memory back to the system after a large decode (glibc keeps it otherwise: idle
    RSS stayed gigabytes above its start after a burst of large images). A no-op where not glibc."""
    if _malloc_trim is not None:
        _malloc_trim(0)


def _load_malloc_trim():
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows)
        return None


_malloc_trim = _load_malloc_trim()
RELEASE_DELAY_S = 2.0  # release_memory_soon: long enough for gradio to encode and let go of a request's images
_release_timer: threading.Timer | None = None
_release_lock = threading.Lock()


def release_memory_soon(delay_s: float = RELEASE_DELAY_S) -> None:
    """release_memory() `delay_s` from now, once however often it is asked for meanwhile: for the memory a
    request still holds when its handler returns (its output image, until gradio has encoded it)."""
    global _release_timer
    with _release_lock:
        if _release_timer is not None or _malloc_trim is None:
            return
        _release_timer = threading.Timer(delay_s, _release_now)
        _release_timer.daemon = True
        _release_timer.start()


def _release_now() -> None:
    global _release_timer
    with _release_lock:
        _release_timer = None
    release_memory()


def _decode_pixels(image: Image.Image, name: str, max_side: int, owned: bool) -> np.ndarray:
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise AudienceError(f"{name}: the image data is truncated or corrupt ({exc})") from exc
    if max(image.size) > max_side and image.mode not in ("RGB", "L", "RGBA", "LA", "I", "F") \
            and not image.mode.startswith("I;16"):
        # palette, 1-bit, CMYK, ...: PIL resizes none of them well, so they become RGB(A) first (then shrink)
        transparent = image.mode in ("PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info)
        image = image.convert("RGBA" if transparent else "RGB")
        owned = True
    if max(image.size) > max_side and image.mode in ("RGB", "L", "RGBA", "LA", "I", "F"):
        # Shrink before the image becomes an array: that copy of a 48 MP photo costs as much as the shrink.
        ratio = max_side / max(image.size)
        shrunk = image.resize(
            (max(1, round(image.width * ratio)), max(1, round(image.height * ratio))), Image.Resampling.BOX
        )
        if owned:
            image.close()  # frees the full-size pixels now, not when the caller's `with` ends
        image, owned = shrunk, True
    image = _apply_exif_orientation(image, in_place=owned)
    return _shrink_array(_rgb_from_pil(image, name, max_side), max_side)


def _apply_exif_orientation(image: Image.Image, in_place: bool) -> Image.Image:
    try:
        if in_place:
            ImageOps.exif_transpose(image, in_place=True)
            return image
        return ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, KeyError, TypeError):
        # A damaged EXIF block should not cost the user the picture: keep it unrotated.
        return image


def _rgb_from_pil(image: Image.Image, name: str, max_side: int = MAX_SIDE) -> np.ndarray:
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        # PIL cannot resize I;16: shrink the 16-bit array (cv2 area averaging keeps uint16), then scale to 8 bits
        return rgb_from_array(_shrink_array(np.asarray(image), max_side), name)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
        return rgb_from_array(np.asarray(image if mode == "RGBA" else image.convert("RGBA")), name)
    if mode != "RGB":
        image = image.convert("RGB")
    return np.ascontiguousarray(np.asarray(image))


def _shrink_array(rgb: np.ndarray, max_side: int) -> np.ndarray:
    height, width = rgb.shape[:2]
    if max(height, width) <= max_side:
        return rgb
    ratio = max_side / max(height, width)
    size = (max(1, round(width * ratio)), max(1, round(height * ratio)))
    # Area averaging: alias-free, and much faster than Pillow's Lanczos thumbnail (docs/measurements.md).
    return np.ascontiguousarray(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA))
