"""Real, deterministic output files built from bytes with the standard library.

- PNG: an 8-bit RGB vertical gradient between two colours taken from a hash of
  the prompt (and output index), zlib-compressed rows. Optionally padded to an
  exact size with private ancillary ``siMp`` chunks placed after the image data
  (decoders skip them), streamed without holding the padding in memory.
- JPEG: a baseline JPEG in which every 8x8 block is flat (DC-only coding), so it
  needs no DCT; the gradient therefore shows 8-pixel bands.
- MP4: a structurally valid ISO-BMFF file (``ftyp`` + ``moov``/``mvhd`` with the
  duration + a small ``mdat``) with no media track: type sniffers and box parsers
  accept it, players show nothing.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Iterator
from functools import lru_cache

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PADDING_CHUNK_TYPE = b"siMp"  # ancillary (s), private (i), reserved bit clear (M), safe to copy (p)
MAX_PADDING_CHUNK = 64 * 1024 * 1024
_CHUNK_OVERHEAD = 12  # length + type + CRC
_STREAM_BLOCK = 64 * 1024


def colours_for(prompt: str, index: int = 0) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    digest = hashlib.sha256(f"{index}\x00{prompt}".encode("utf-8", "surrogatepass")).digest()
    return (digest[0], digest[1], digest[2]), (digest[3], digest[4], digest[5])


def _row_colour(top: tuple[int, int, int], bottom: tuple[int, int, int], y: int, height: int) -> bytes:
    t = y / max(height - 1, 1)
    return bytes(round(a + (b - a) * t) for a, b in zip(top, bottom, strict=True))


def _png_chunk(chunk_type: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(data, zlib.crc32(chunk_type))
    return struct.pack(">I", len(data)) + chunk_type + data + struct.pack(">I", crc)


@lru_cache(maxsize=64)
def render_png(prompt: str, width: int, height: int, index: int = 0) -> bytes:
    top, bottom = colours_for(prompt, index)
    raw = b"".join(b"\x00" + _row_colour(top, bottom, y, height) * width for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (
        PNG_SIGNATURE
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(raw, 6))
        + _png_chunk(b"IEND", b"")
    )


def padding_plan(base_size: int, target_size: int | None) -> list[int]:
    """Data lengths of the padding chunks that bring a PNG of ``base_size`` to exactly ``target_size``.

    A target below the base image plus one chunk header cannot be reached: no padding then.
    """
    if target_size is None or target_size - base_size < _CHUNK_OVERHEAD:
        return []
    padding = target_size - base_size
    chunk_count = -(-padding // (MAX_PADDING_CHUNK + _CHUNK_OVERHEAD))
    data_left = padding - chunk_count * _CHUNK_OVERHEAD
    plan: list[int] = []
    for _ in range(chunk_count):
        length = min(data_left, MAX_PADDING_CHUNK)
        plan.append(length)
        data_left -= length
    return plan


@lru_cache(maxsize=16)
def _zero_chunk_crc(length: int) -> int:
    crc = zlib.crc32(PADDING_CHUNK_TYPE)
    block = bytes(min(length, _STREAM_BLOCK))
    remaining = length
    while remaining:
        step = min(remaining, len(block))
        crc = zlib.crc32(block[:step], crc)
        remaining -= step
    return crc


def padded_png_size(png: bytes, target_size: int | None) -> int:
    return len(png) + sum(length + _CHUNK_OVERHEAD for length in padding_plan(len(png), target_size))


def iter_padded_png(png: bytes, target_size: int | None) -> Iterator[bytes]:
    """The PNG with zero-filled padding chunks inserted before IEND, in blocks of at most 64 KiB."""
    plan = padding_plan(len(png), target_size)
    if not plan:
        yield png
        return
    iend = png[-_CHUNK_OVERHEAD:]
    yield png[:-_CHUNK_OVERHEAD]
    zeros = bytes(_STREAM_BLOCK)
    for length in plan:
        yield struct.pack(">I", length) + PADDING_CHUNK_TYPE
        remaining = length
        while remaining:
            step = min(remaining, _STREAM_BLOCK)
            yield zeros[:step]
            remaining -= step
        yield struct.pack(">I", _zero_chunk_crc(length))
    yield iend


# --- JPEG (baseline, DC-only) ---------------------------------------------------------

_DC_BITS = (0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0)  # the standard luminance DC table
_DC_VALUES = tuple(range(12))


def _canonical_codes(bits: tuple[int, ...], values: tuple[int, ...]) -> dict[int, tuple[int, int]]:
    codes: dict[int, tuple[int, int]] = {}
    code = 0
    position = 0
    for length_minus_one, count in enumerate(bits):
        for _ in range(count):
            codes[values[position]] = (code, length_minus_one + 1)
            code += 1
            position += 1
        code <<= 1
    return codes


_DC_CODES = _canonical_codes(_DC_BITS, _DC_VALUES)
_EOB_CODE = (0, 1)  # the AC table holds one symbol, EOB (0x00), coded as the single bit 0


class _BitWriter:
    def __init__(self) -> None:
        self.out = bytearray()
        self.accumulator = 0
        self.count = 0

    def write(self, value: int, length: int) -> None:
        self.accumulator = (self.accumulator << length) | (value & ((1 << length) - 1))
        self.count += length
        while self.count >= 8:
            self.count -= 8
            byte = (self.accumulator >> self.count) & 0xFF
            self.out.append(byte)
            if byte == 0xFF:
                self.out.append(0)  # byte stuffing
        self.accumulator &= (1 << self.count) - 1

    def flush(self) -> bytes:
        if self.count:
            self.write((1 << (8 - self.count)) - 1, 8 - self.count)  # pad with 1-bits
        return bytes(self.out)


def _ycbcr(rgb: bytes) -> tuple[int, int, int]:
    r, g, b = rgb
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
    return tuple(max(0, min(255, round(c))) for c in (y, cb, cr))  # type: ignore[return-value]


def _dc_symbol(diff: int) -> tuple[int, int, int]:
    """(category, extra bits value, extra bit count) for a DC difference."""
    magnitude = abs(diff)
    category = magnitude.bit_length()
    bits = diff if diff >= 0 else diff + (1 << category) - 1
    return category, bits, category


@lru_cache(maxsize=32)
def render_jpeg(prompt: str, width: int, height: int, index: int = 0) -> bytes:
    top, bottom = colours_for(prompt, index)
    blocks_x = (width + 7) // 8
    blocks_y = (height + 7) // 8
    writer = _BitWriter()
    previous = [0, 0, 0]
    for block_row in range(blocks_y):
        centre = min(block_row * 8 + 4, height - 1)
        # flat block of value v: DC coefficient 8*(v-128), quantised by 8 -> v-128
        levels = [c - 128 for c in _ycbcr(_row_colour(top, bottom, centre, height))]
        for _ in range(blocks_x):
            for component in range(3):
                category, extra, extra_length = _dc_symbol(levels[component] - previous[component])
                previous[component] = levels[component]
                code, length = _DC_CODES[category]
                writer.write(code, length)
                if extra_length:
                    writer.write(extra, extra_length)
                writer.write(*_EOB_CODE)
    scan = writer.flush()

    def segment(marker: int, payload: bytes) -> bytes:
        return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload

    quant = segment(0xDB, b"\x00" + bytes([8] * 64))
    frame = segment(
        0xC0, struct.pack(">BHHB", 8, height, width, 3) + b"".join(bytes([cid, 0x11, 0]) for cid in (1, 2, 3))
    )
    dc_table = segment(0xC4, b"\x00" + bytes(_DC_BITS) + bytes(_DC_VALUES))
    ac_table = segment(0xC4, b"\x10" + bytes([1] + [0] * 15) + b"\x00")
    scan_header = segment(0xDA, b"\x03" + b"".join(bytes([cid, 0x00]) for cid in (1, 2, 3)) + b"\x00\x3f\x00")
    jfif = segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    return b"\xff\xd8" + jfif + quant + frame + dc_table + ac_table + scan_header + scan + b"\xff\xd9"


# --- MP4 ------------------------------------------------------------------------------


def _box(box_type: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload) + 8) + box_type + payload


@lru_cache(maxsize=64)
def render_mp4(prompt: str, duration_seconds: int) -> bytes:
    ftyp = _box(b"ftyp", b"isom" + struct.pack(">I", 512) + b"isomiso2mp41")
    matrix = struct.pack(">9I", 0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000)
    mvhd = _box(
        b"mvhd",
        struct.pack(">B3xIIII", 0, 0, 0, 1000, duration_seconds * 1000)  # version/flags, times, timescale ms
        + struct.pack(">IH10x", 0x00010000, 0x0100)  # rate 1.0, volume 1.0, reserved
        + matrix
        + bytes(24)  # pre_defined
        + struct.pack(">I", 1),  # next_track_ID
    )
    mdat = _box(b"mdat", hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).digest())
    return ftyp + _box(b"moov", mvhd) + mdat


# --- sniffing -------------------------------------------------------------------------


def sniff_image_type(head: bytes) -> str | None:
    """The image MIME type from magic bytes (PNG, JPEG, WebP, GIF), else None."""
    if head.startswith(PNG_SIGNATURE):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None
