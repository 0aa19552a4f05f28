"""JSON Lines as both batch paths read them: an S3 batch upload (S3IntakeFunction) and
`imagejobs submit --file`. One reader, so that a file one path accepts the other accepts too."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

UTF8_BOM = b"\xef\xbb\xbf"


def _split_leading_bom(chunks: Iterable[bytes]) -> tuple[int, Iterator[bytes]]:
    """(the length of a byte-order mark at the very start, which may span the first chunks; the
    chunks less it)."""
    head = b""
    stream = iter(chunks)
    for chunk in stream:
        head += chunk
        if len(head) >= len(UTF8_BOM) or not UTF8_BOM.startswith(head):
            break
    rest = head.removeprefix(UTF8_BOM)
    return len(head) - len(rest), itertools.chain([rest], stream)


def iter_capped_lines(
    chunks: Iterable[bytes], max_line_bytes: int
) -> Iterator[tuple[int, bytes | None, int]]:
    """(line number from 1, the line without its line break or None if longer than the cap, its length).

    Unlike StreamingBody.iter_lines, a huge line is never buffered: past the cap only its length is kept.
    A UTF-8 byte-order mark at the start of the stream (some editors write one) is not part of line 1.
    """
    for number, line, length, _ in iter_positioned_lines(chunks, max_line_bytes):
        yield number, line, length


def iter_positioned_lines(
    chunks: Iterable[bytes], max_line_bytes: int, *, first_line: int = 1, offset: int = 0
) -> Iterator[tuple[int, bytes | None, int, int]]:
    """As `iter_capped_lines`, with each line's end: the offset in the object just past its line
    break, where a ranged GET resumes. `chunks` start at byte `offset`, which is the start of line
    `first_line`; a byte-order mark is looked for only at offset 0."""
    if offset == 0:
        skipped, chunks = _split_leading_bom(chunks)
        offset = skipped
    number = first_line - 1
    pending = bytearray()
    length = 0
    overflow = False
    for chunk in chunks:
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            piece = chunk[start:] if end < 0 else chunk[start:end]
            length += len(piece)
            if not overflow:
                if length > max_line_bytes + 1:  # +1: a trailing \r is not content
                    overflow = True
                    pending.clear()
                else:
                    pending += piece
            if end < 0:
                break
            number += 1
            offset += length + 1
            yield number, None if overflow else bytes(pending).rstrip(b"\r"), length, offset
            pending.clear()
            length = 0
            overflow = False
            start = end + 1
    if length:
        yield number + 1, None if overflow else bytes(pending).rstrip(b"\r"), length, offset + length
