"""read_image: every format and mode we promise, and one clear sentence for every bad input."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from audience.data.images import IMAGE_EXTENSIONS, MAX_PIXELS, MAX_SIDE, list_images, read_image
from audience.errors import AudienceError


def gradient(height: int = 48, width: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // (width - 1), y * 255 // (height - 1), (x + y) % 256], axis=2).astype(np.uint8)


def assert_rgb(array: np.ndarray, shape: tuple[int, int]) -> None:
    assert array.dtype == np.uint8
    assert array.shape == (*shape, 3)
    assert array.flags["C_CONTIGUOUS"]


@pytest.mark.parametrize(
    ("suffix", "save_args", "tolerance"),
    [
        (".png", {}, 0),
        (".bmp", {}, 0),
        (".webp", {"lossless": True}, 0),
        (".jpg", {"quality": 95}, 6),
        (".webp", {"quality": 90}, 8),
    ],
)
def test_formats_round_trip(tmp_path: Path, suffix: str, save_args: dict, tolerance: int) -> None:
    original = gradient()
    path = tmp_path / f"img{suffix}"
    Image.fromarray(original).save(path, **save_args)
    decoded = read_image(path)
    assert_rgb(decoded, original.shape[:2])
    assert np.abs(decoded.astype(int) - original).mean() <= tolerance


def test_str_path_bytes_and_pil_give_the_same_pixels(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    Image.fromarray(gradient()).save(path)
    expected = read_image(path)
    assert np.array_equal(read_image(str(path)), expected)
    assert np.array_equal(read_image(path.read_bytes()), expected)
    assert np.array_equal(read_image(Image.open(path)), expected)


def test_exif_orientation_6_comes_back_rotated(tmp_path: Path) -> None:
    stored = np.zeros((20, 40, 3), np.uint8)  # 40 wide, 20 high as stored
    stored[:10, :10] = (255, 0, 0)  # red in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    Image.fromarray(stored).save(path, exif=exif.tobytes(), quality=95)
    shown = read_image(path)
    assert shown.shape == (40, 20, 3)
    assert shown[2:8, 12:18, 0].mean() > 200 and shown[2:8, 12:18, 1:].mean() < 60  # now top-right
    assert shown[2:8, 2:8].mean() < 30


def test_exif_orientation_survives_the_downscale(tmp_path: Path) -> None:
    stored = np.zeros((200, 400, 3), np.uint8)
    stored[:100, :100] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated-big.jpg"
    Image.fromarray(stored).save(path, exif=exif.tobytes(), quality=95)
    source = Image.open(path)
    for shown in (read_image(path, max_side=100), read_image(source, max_side=100)):
        assert shown.shape == (100, 50, 3)
        assert shown[5:20, 30:45, 0].mean() > 200 and shown[5:20, 5:20].mean() < 30
    assert source.size == (400, 200)  # a caller's PIL image is not changed


def test_grayscale_becomes_three_equal_channels(tmp_path: Path) -> None:
    gray = gradient()[:, :, 0]
    path = tmp_path / "gray.png"
    Image.fromarray(gray, mode="L").save(path)
    for decoded in (read_image(path), read_image(gray), read_image(gray[:, :, None])):
        assert_rgb(decoded, gray.shape)
        assert all(np.array_equal(decoded[:, :, c], gray) for c in range(3))


def test_rgba_is_composited_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)  # opaque
    rgba[0, 1] = (0, 0, 0, 0)  # fully transparent black
    rgba[0, 2] = (0, 0, 0, 128)  # half-transparent black
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    for decoded in (read_image(path), read_image(rgba)):
        assert tuple(decoded[0, 0]) == (10, 20, 30)
        assert tuple(decoded[0, 1]) == (255, 255, 255)
        assert tuple(decoded[0, 2]) == (127, 127, 127)
    la = Image.fromarray(rgba[:, :, [0, 3]], mode="LA")
    assert tuple(read_image(la)[0, 1]) == (255, 255, 255)


def test_palette_images_with_and_without_transparency(tmp_path: Path) -> None:
    palette = Image.new("P", (3, 2))
    palette.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
    palette.putdata([0, 1, 2, 0, 1, 2])
    opaque = tmp_path / "palette.png"
    palette.save(opaque)
    decoded = read_image(opaque)
    assert_rgb(decoded, (2, 3))
    assert [tuple(p) for p in decoded[0]] == [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    transparent = tmp_path / "palette-transparent.png"
    palette.save(transparent, transparency=1)  # index 1 (green) is transparent
    assert tuple(read_image(transparent)[0, 1]) == (255, 255, 255)


def test_16_bit_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 1000, 128 * 257, 65535]], np.uint16)
    expected = [0, 4, 128, 255]  # 1000 / 257 = 3.9; clipping would give 255
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    for decoded in (read_image(path), read_image(values)):
        assert decoded[0, :, 0].tolist() == expected
    rgb16 = np.repeat(values[:, :, None], 3, axis=2)
    assert read_image(rgb16)[0, :, 1].tolist() == expected


def test_float_and_bool_arrays() -> None:
    floats = np.array([[0.0, 0.5, 1.0]], np.float32)
    assert read_image(floats)[0, :, 0].tolist() == [0, 128, 255]
    assert read_image(np.array([[True, False]]))[0, :, 2].tolist() == [255, 0]
    with pytest.raises(AudienceError, match="from 0 to 1"):
        read_image(floats * 255)
    with pytest.raises(AudienceError, match="NaN"):
        read_image(np.array([[np.nan]]))


@pytest.mark.parametrize("size", [(1, 1), (2, 2), (1, 7)])
def test_tiny_images_are_accepted(tmp_path: Path, size: tuple[int, int]) -> None:
    path = tmp_path / "tiny.png"
    Image.new("RGB", size, (1, 2, 3)).save(path)
    decoded = read_image(path)
    assert_rgb(decoded, (size[1], size[0]))
    assert tuple(decoded[0, 0]) == (1, 2, 3)


def test_large_images_are_downscaled_to_max_side(tmp_path: Path) -> None:
    path = tmp_path / "wide.jpg"
    Image.new("RGB", (MAX_SIDE + 904, 1000), (200, 100, 50)).save(path, quality=90)
    decoded = read_image(path)
    assert max(decoded.shape[:2]) == MAX_SIDE
    assert decoded.shape[0] == round(1000 * MAX_SIDE / (MAX_SIDE + 904))
    assert np.abs(decoded[10, 10].astype(int) - (200, 100, 50)).max() <= 3
    assert read_image(np.zeros((10, 300, 3), np.uint8), max_side=100).shape == (3, 100, 3)


def png_with_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    )


def test_decompression_bomb_header_is_refused_before_decoding(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(png_with_header_only(100_000, 100_000))
    assert path.stat().st_size < 200
    decoded = []
    monkeypatch.setattr(Image.Image, "load", lambda image: decoded.append(image))  # no pixel is decoded
    with pytest.raises(AudienceError, match="bomb.png: the image has too many pixels") as refused:
        read_image(path)
    assert decoded == []  # refused from the header (a wall-clock bound here failed under load)
    assert f"more than the limit of {MAX_PIXELS:,} pixels" in str(refused.value)  # ours, not Pillow's 178,956,970
    assert "178956970" not in str(refused.value)


@pytest.mark.parametrize(("width", "height"), [(8000, 8000), (10_000, 12_000)])
def test_pixel_limit_below_and_within_pillows_warning_range(tmp_path: Path, width: int, height: int) -> None:
    # 64 MP is over our 50 MP limit but under Pillow's; 120 MP is where Pillow only warns.
    path = tmp_path / "big.png"
    path.write_bytes(png_with_header_only(width, height))
    with pytest.raises(AudienceError, match="big.png: the image"):
        read_image(path)
    with pytest.raises(AudienceError, match="more than the limit of 100 pixels"):
        read_image(png_with_header_only(11, 10), max_pixels=100)


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.touch()
    with pytest.raises(AudienceError, match=r"^empty.jpg: the file is empty \(0 bytes\)$"):
        read_image(path)
    with pytest.raises(AudienceError, match="empty"):
        read_image(b"")


def test_text_file_named_jpg(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    path.write_text("this is not a picture\n")
    with pytest.raises(AudienceError, match=r"^photo.jpg: not an image file \(cannot identify image format\)$"):
        read_image(path)


def test_truncated_jpeg(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(gradient(200, 200)).save(buffer, format="JPEG", quality=90)
    path = tmp_path / "x.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(AudienceError, match="^x.jpg: the image data is truncated or corrupt"):
        read_image(path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # read_image must not switch it on for everyone


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(AudienceError, match="nope.jpg: no such file"):
        read_image(tmp_path / "nope.jpg")
    with pytest.raises(AudienceError, match="is a folder"):
        read_image(tmp_path)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((0, 5, 3), np.uint8), "empty"),
        (np.zeros((4, 4, 2), np.uint8), "not an image"),
        (np.full((2, 2), 70000, np.int32), "fit neither"),
        (np.zeros((2, 2), np.complex64), "not supported"),
    ],
)
def test_bad_arrays(array: np.ndarray, message: str) -> None:
    with pytest.raises(AudienceError, match=message):
        read_image(array)


def test_list_images(tmp_path: Path) -> None:
    for name in ("b.PNG", "a.jpg", "notes.txt", ".hidden.jpg", "sub/c.webp", "sub/deeper/d.bmp"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.PNG"]
    assert [p.name for p in list_images([tmp_path], recursive=True)] == ["a.jpg", "b.PNG", "c.webp", "d.bmp"]
    single = tmp_path / "notes.txt"
    assert list_images([single, tmp_path / "a.jpg", single]) == [single, tmp_path / "a.jpg"]
    with pytest.raises(AudienceError, match="missing: no such file or folder"):
        list_images([tmp_path / "missing"])
    assert {".jpg", ".jpeg", ".png", ".webp", ".bmp"} <= IMAGE_EXTENSIONS
