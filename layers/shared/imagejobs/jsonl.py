"""JSON Lines as both batch paths read them: an S3 batch upload (S3IntakeFunction) and
`imagejobs submit --file`. One reader, so that a file one path accepts the other accepts too."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

UTF8_BOM = b"\xef\xbb\xbf"


def _without_leading_bom(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The chunks, less a byte-order mark at the very start (which may span the first chunks)."""
    head = b""
    stream = iter(chunks)
    for chunk in stream:
        head += chunk
        if len(head) >= len(UTF8_BOM) or not UTF8_BOM.startswith(head):
            break
    yield head.removeprefix(UTF8_BOM)
    yield from stream


def iter_capped_lines(
    chunks: Iterable[bytes], max_line_bytes: int
) -> Iterator[tuple[int, bytes | None, int]]:
    """(line number from 1, the line without its line break or None if longer than the cap, its length).

    Unlike StreamingBody.iter_lines, a huge line is never buffered: past the cap only its length is kept.
    A UTF-8 byte-order mark at the start of the stream (some editors write one) is not part of line 1.
    """
    chunks = _without_leading_bom(chunks)
    number = 0
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
            yield number, None if overflow else bytes(pending).rstrip(b"\r"), length
            pending.clear()
            length = 0
            overflow = False
            start = end + 1
    if length:
        yield number + 1, None if overflow else bytes(pending).rstrip(b"\r"), length
