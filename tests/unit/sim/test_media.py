"""Generated PNG/JPEG/MP4 bytes and content sniffing."""

from __future__ import annotations

import io
import struct

import pytest
from PIL import Image

from imagejobs_tools.sim import media


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_png_is_a_deterministic_gradient_of_the_requested_size() -> None:
    png = media.render_png("a cat", 896, 1120)
    image = decode(png)

    assert (image.format, image.mode, image.size) == ("PNG", "RGB", (896, 1120))
    top, bottom = media.colours_for("a cat")
    assert image.getpixel((0, 0)) == top
    assert image.getpixel((895, 1119)) == bottom
    assert png == media.render_png.__wrapped__("a cat", 896, 1120)  # same bytes without the cache
    assert png != media.render_png("a dog", 896, 1120)
    assert png != media.render_png("a cat", 896, 1120, index=1)


def test_jpeg_decodes_with_the_requested_size_and_colours() -> None:
    jpeg = media.render_jpeg("a cat", 1344, 756)
    image = decode(jpeg)

    assert (image.format, image.size) == ("JPEG", (1344, 756))
    top, _ = media.colours_for("a cat")
    assert all(abs(a - b) <= 6 for a, b in zip(image.getpixel((10, 2)), top, strict=True))


@pytest.mark.parametrize("extra", [0, 11, 12, 13, 1000, 5 * 1024 + 7])
def test_padding_reaches_the_exact_target_when_reachable(extra: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(media, "MAX_PADDING_CHUNK", 1024)  # force several padding chunks
    png = media.render_png("pad", 64, 32)
    target = len(png) + extra

    data = b"".join(media.iter_padded_png(png, target))

    expected = len(png) if extra < 12 else target
    assert len(data) == media.padded_png_size(png, target) == expected
    Image.open(io.BytesIO(data)).verify()  # chunk CRCs
    assert decode(data).size == (64, 32)
    assert data.endswith(png[-12:])  # IEND last


def test_padding_is_streamed_in_bounded_blocks() -> None:
    png = media.render_png("pad", 16, 16)

    blocks = list(media.iter_padded_png(png, 1_000_000))

    assert sum(len(block) for block in blocks) == 1_000_000
    assert max(len(block) for block in blocks) <= 64 * 1024


def test_mp4_is_iso_bmff_with_the_duration() -> None:
    data = media.render_mp4("a wave", 8)
    boxes = []
    offset = 0
    while offset < len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        boxes.append((kind, data[offset + 8 : offset + size]))
        offset += size

    assert [kind for kind, _ in boxes] == [b"ftyp", b"moov", b"mdat"]
    mvhd = boxes[1][1]
    assert mvhd[4:8] == b"mvhd"
    timescale, duration = struct.unpack(">II", mvhd[20:28])
    assert duration / timescale == 8


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"\x89PNG\r\n\x1a\n....", "image/png"),
        (b"\xff\xd8\xff\xe0", "image/jpeg"),
        (b"GIF89a", "image/gif"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"RIFF\x00\x00\x00\x00WAVE", None),
        (b"<html>", None),
        (b"", None),
    ],
)
def test_sniff_image_type(head: bytes, expected: str | None) -> None:
    assert media.sniff_image_type(head) == expected
