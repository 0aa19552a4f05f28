"""Streams provider output URLs into S3 without buffering whole files.

Keys are deterministic (``<prefix><jobId>/<n>.<ext>``) so a retried copy overwrites
instead of duplicating. The first bytes decide the content type; an image job that
gets anything but an image is refused. The size cap is enforced from
Content-Length and again while streaming.
"""

from __future__ import annotations

import hashlib
import re
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import requests

from imagejobs import urls
from imagejobs.observability import logger, safe_url

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

MIB = 1024 * 1024
S3_MIN_PART = 5 * MIB
# Outputs of a failed copy carry this tag; OutputBucket's lifecycle rule ExpireOrphanedOutputs deletes them.
ORPHAN_TAG = "imagejobs-orphan"


@dataclass(frozen=True)
class StoredOutput:
    uri: str
    bucket: str
    key: str
    bytes: int
    sha256: str
    content_type: str

    def to_record(self) -> dict[str, Any]:
        data = asdict(self)
        data["contentType"] = data.pop("content_type")
        return data


class OutputCopyError(Exception):
    """A permanent copy failure (unsafe URL, too large, wrong content, 4xx)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class TransientCopyError(Exception):
    """A copy failure worth retrying (timeouts, connection errors, 5xx/429 from the CDN)."""


def sniff(head: bytes | bytearray) -> tuple[str, str] | None:
    """(content type, extension) from a file's first bytes, or None when unknown."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png", "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg", "jpg"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp", "webp"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif", "gif"
    if len(head) >= 12 and head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand == b"qt  ":
            return "video/quicktime", "mov"
        return "video/mp4", "mp4"
    return None


def sanitise_metadata(metadata: Mapping[str, str], limit_bytes: int = 2048) -> dict[str, str]:
    """S3 user metadata: lower-case ``[a-z0-9-]`` keys, ASCII values (others percent-encoded)."""
    clean: dict[str, str] = {}
    total = 0
    for key, value in metadata.items():
        name = re.sub(r"[^a-z0-9-]", "-", str(key).lower()).strip("-")[:64]
        if not name:
            continue
        text = quote(str(value), safe=" !\"#$&'()*+,-./:;<=>?@[]^_`{|}~")[:1024]
        total += len(name) + len(text)
        if total > limit_bytes:
            break
        clean[name] = text
    return clean


class _CappedStream:
    """Iterates chunks, hashing and counting them, failing past the cap or the deadline."""

    def __init__(self, chunks: Iterator[bytes], max_bytes: int, deadline: float, clock: Callable[[], float]):
        self._chunks = chunks
        self._max_bytes = max_bytes
        self._deadline = deadline
        self._clock = clock
        self.sha256 = hashlib.sha256()
        self.total = 0
        self._pending = b""
        self._done = False

    def read(self, size: int) -> bytearray:
        """Up to ``size`` bytes (fewer only at the end of the stream), in one buffer grown in place:
        a part is held once (no list of chunks joined into a second copy, then sliced into a third)."""
        buffer = bytearray(self._pending)
        self._pending = b""
        while len(buffer) < size and not self._done:
            if self._clock() > self._deadline:
                raise TransientCopyError("download exceeded its overall deadline")
            try:
                chunk = next(self._chunks)
            except StopIteration:
                self._done = True
                break
            except (requests.ConnectionError, requests.Timeout) as exc:
                raise TransientCopyError(f"download interrupted: {type(exc).__name__}") from None
            if not chunk:
                continue
            self.total += len(chunk)
            if self.total > self._max_bytes:
                raise OutputCopyError("OUTPUT_TOO_LARGE", f"output exceeds {self._max_bytes} bytes")
            self.sha256.update(chunk)
            buffer += chunk
        if len(buffer) > size:
            self._pending = bytes(buffer[size:])  # less than one chunk
            del buffer[size:]
        return buffer


class OutputCopier:
    def __init__(
        self,
        session: requests.Session,
        s3: S3Client,
        bucket: str,
        *,
        max_bytes: int,
        allow_hosts: Iterable[str] = (),
        resolver: urls.Resolver = socket.getaddrinfo,
        part_size: int = 8 * MIB,
        connect_timeout: float = 3.05,
        read_timeout: float = 30.0,
        deadline_seconds: float = 600.0,
        chunk_size: int = 256 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if part_size < S3_MIN_PART:
            raise ValueError(f"part_size must be at least {S3_MIN_PART} bytes (S3's minimum part)")
        self.session = session
        self.s3 = s3
        self.bucket = bucket
        self.max_bytes = max_bytes
        self.allow_hosts = tuple(allow_hosts)
        self.resolver = resolver
        self.part_size = part_size
        self.timeout = (connect_timeout, read_timeout)
        self.deadline_seconds = deadline_seconds
        self.chunk_size = chunk_size
        self.clock = clock

    def copy_outputs(
        self,
        job_id: str,
        prefix: str,
        output_urls: Sequence[str],
        *,
        kind: str = "image",
        metadata: Mapping[str, str] | None = None,
        time_budget_seconds: float | None = None,
        finished_elsewhere: Callable[[], bool] | None = None,
    ) -> list[StoredOutput]:
        """Copy every URL in order; all of them must finish within the time budget (default the copier's).

        When one output fails, the ones this call already stored are tagged as orphans before the
        error is raised (`mark_orphaned`): the bucket's lifecycle rule expires them, and a retry
        that copies them again writes fresh, untagged objects. No role may delete objects.
        ``finished_elsewhere`` is asked first: keys are per job, so if another attempt has finished
        the job meanwhile (a duplicate loop), these objects are its outputs and must stay.
        """
        base = prefix if prefix.endswith("/") or not prefix else prefix + "/"
        budget = self.deadline_seconds if time_budget_seconds is None else time_budget_seconds
        deadline = self.clock() + min(self.deadline_seconds, budget)
        stored: list[StoredOutput] = []
        try:
            for index, url in enumerate(output_urls):
                key_stem = f"{base}{job_id}/{index}"
                stored.append(
                    self.copy_one(
                        url, key_stem, kind=kind, metadata=metadata, job_id=job_id, deadline=deadline
                    )
                )
        except Exception:
            if stored and not (finished_elsewhere is not None and finished_elsewhere()):
                self.mark_orphaned(stored)
            raise
        return stored

    def mark_orphaned(self, stored: Sequence[StoredOutput]) -> list[str]:
        """Tag stored outputs `imagejobs-orphan=true` (best effort): the template's lifecycle rule
        expires them after a day. Returns the keys that could not be tagged."""
        left: list[str] = []
        for output in stored:
            try:
                self.s3.put_object_tagging(
                    Bucket=output.bucket,
                    Key=output.key,
                    Tagging={"TagSet": [{"Key": ORPHAN_TAG, "Value": "true"}]},
                )
            except Exception:
                left.append(output.key)
        if stored:
            logger.warning(
                "outputs of a failed copy tagged for expiry",
                extra={"tagged": len(stored) - len(left), "untagged": left},
            )
        return left

    def copy_one(
        self,
        url: str,
        key_stem: str,
        *,
        kind: str = "image",
        metadata: Mapping[str, str] | None = None,
        job_id: str | None = None,
        deadline: float | None = None,
    ) -> StoredOutput:
        """Copy one URL to ``<key_stem>.<ext>``; ``deadline`` is on the copier's clock."""
        if deadline is None:
            deadline = self.clock() + self.deadline_seconds
        try:
            response = urls.safe_get(
                self.session, url, allow_hosts=self.allow_hosts, resolver=self.resolver, timeout=self.timeout
            )
        except urls.UnsafeUrlError as exc:
            raise OutputCopyError("UNSAFE_OUTPUT_URL", f"{safe_url(url)}: {exc.reason}") from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise TransientCopyError(f"fetching {safe_url(url)} failed: {type(exc).__name__}") from None
        with response:
            status = response.status_code
            if status == 429 or status >= 500:
                raise TransientCopyError(f"fetching {safe_url(url)} returned HTTP {status}")
            if status != 200:
                raise OutputCopyError(
                    "OUTPUT_FETCH_FAILED", f"fetching {safe_url(url)} returned HTTP {status}"
                )
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > self.max_bytes:
                raise OutputCopyError(
                    "OUTPUT_TOO_LARGE",
                    f"{safe_url(url)} declares {declared} bytes; the cap is {self.max_bytes}",
                )
            stream = _CappedStream(
                response.iter_content(chunk_size=self.chunk_size), self.max_bytes, deadline, self.clock
            )
            first = stream.read(self.part_size)
            sniffed = sniff(first[:64])
            if sniffed is None:
                raise OutputCopyError(
                    "UNEXPECTED_CONTENT", f"{safe_url(url)} is not a PNG/JPEG/WebP/GIF/MP4 file"
                )
            content_type, extension = sniffed
            if kind == "image" and not content_type.startswith("image/"):
                raise OutputCopyError(
                    "UNEXPECTED_CONTENT", f"{safe_url(url)} is {content_type}, not an image"
                )
            if kind == "video" and not content_type.startswith("video/"):
                raise OutputCopyError("UNEXPECTED_CONTENT", f"{safe_url(url)} is {content_type}, not a video")
            key = f"{key_stem}.{extension}"
            extra: dict[str, Any] = {"ContentType": content_type}
            user_metadata = sanitise_metadata({**(metadata or {}), **({"job-id": job_id} if job_id else {})})
            if user_metadata:
                extra["Metadata"] = user_metadata
            if len(first) < self.part_size:
                # botocore sends any bytes-like body; the stubs name bytes only, and bytes() would
                # copy the output: two of it in memory.
                self.s3.put_object(Bucket=self.bucket, Key=key, Body=first, **extra)  # type: ignore[arg-type]
            else:
                handed_over = [first]
                del first  # the multipart loop drops each part once it is sent: one part in memory
                self._multipart(key, handed_over, stream, extra)
            digest = stream.sha256.hexdigest()
            logger.info(
                "output stored",
                extra={
                    "source": safe_url(url),
                    "key": key,
                    "bytes": stream.total,
                    "content_type": content_type,
                },
            )
            return StoredOutput(
                uri=f"s3://{self.bucket}/{key}",
                bucket=self.bucket,
                key=key,
                bytes=stream.total,
                sha256=digest,
                content_type=content_type,
            )

    def _multipart(
        self, key: str, first: list[bytearray], stream: _CappedStream, extra: Mapping[str, Any]
    ) -> None:
        """`first` holds the first part; it is taken out of the list so no one else keeps it."""
        upload_id = self.s3.create_multipart_upload(Bucket=self.bucket, Key=key, **extra)["UploadId"]
        try:
            parts: list[CompletedPartTypeDef] = []
            chunk: bytes | bytearray = first.pop()
            number = 1
            while chunk:
                etag = self.s3.upload_part(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=chunk,  # type: ignore[arg-type]
                )["ETag"]
                parts.append({"ETag": etag, "PartNumber": number})
                number += 1
                chunk = b""  # let the sent part go before the next one is read
                chunk = stream.read(self.part_size)
            self.s3.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            try:
                self.s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            except Exception:  # the original error matters more; a lifecycle rule cleans leftovers
                logger.warning("abort_multipart_upload failed", extra={"key": key})
            raise
