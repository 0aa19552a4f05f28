"""Reading uploaded objects: heads, small JSON documents, user metadata, and a body that is read
on from the byte reached when its stream breaks off.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Mapping
from email.header import decode_header
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError, IncompleteReadError, ReadTimeoutError, ResponseStreamingError
from urllib3.exceptions import HTTPError as Urllib3Error

from imagejobs.observability import logger

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# A dropped body stream (S3 closes a connection its client stops reading from, while sends are
# throttled) is reopened at the byte reached, this many times per invocation, before it fails.
STREAM_REOPENS = 5
STREAM_ERRORS = (ResponseStreamingError, IncompleteReadError, ReadTimeoutError, Urllib3Error, ConnectionError)
# Written by the copier on every output; an object carrying it was made by the pipeline.
OUTPUT_MARKER_METADATA = "job-id"


def _is_missing(error: ClientError) -> bool:
    code = str(error.response.get("Error", {}).get("Code", ""))
    return code in {"404", "NoSuchKey", "NotFound", "NoSuchVersion"}


def head_object(s3: S3Client, bucket: str, key: str, version_id: str | None = None) -> dict[str, Any] | None:
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if version_id:
        kwargs["VersionId"] = version_id
    try:
        return dict(s3.head_object(**kwargs))
    except ClientError as error:
        if _is_missing(error):
            return None
        raise


def read_small_json(s3: S3Client, bucket: str, key: str, limit: int) -> tuple[Any, str | None, str | None]:
    """(document, etag, problem): document None and problem None when the object does not exist."""
    try:
        response = s3.get_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if _is_missing(error):
            return None, None, None
        raise
    with response["Body"] as body:
        raw = body.read(limit + 1)
    etag = str(response.get("ETag", "")).strip('"')
    if len(raw) > limit:
        return None, etag, f"is larger than {limit} bytes"
    try:
        return json.loads(raw.decode("utf-8")), etag, None
    except (UnicodeDecodeError, ValueError) as exc:
        return None, etag, f"is not UTF-8 JSON ({exc})"


def user_metadata(head: Mapping[str, Any]) -> dict[str, str]:
    """A HeadObject's x-amz-meta-* values by lower-case name, decoded."""
    return {str(k).lower(): decode_metadata_value(str(v)) for k, v in (head.get("Metadata") or {}).items()}


def decode_metadata_value(value: str) -> str:
    """S3 returns non-ASCII user metadata RFC 2047-encoded (=?UTF-8?B?...?=): decode it."""
    if "=?" not in value:
        return value
    try:
        parts = decode_header(value)
    except Exception:
        return value
    return "".join(
        text.decode(charset or "utf-8", errors="replace") if isinstance(text, bytes) else text
        for text, charset in parts
    )


def object_chunks(
    s3: S3Client,
    get_kwargs: Mapping[str, Any],
    *,
    size: int,
    chunk_bytes: int,
    start: int = 0,
    reopens: int = STREAM_REOPENS,
) -> Generator[bytes, None, None]:
    """The object's bytes from `start`, in chunks. A body that breaks off is asked for again from
    the byte it reached (a ranged GET of the same version or ETag), so a slow reader never starts
    over."""
    if start and start >= size:
        return  # nothing is left, and S3 refuses a range from the end (416 InvalidRange)
    offset = start
    reopened = 0
    while True:
        kwargs = dict(get_kwargs, Range=f"bytes={offset}-") if offset else dict(get_kwargs)
        body = s3.get_object(**kwargs)["Body"]
        try:
            with body:
                for chunk in body.iter_chunks(chunk_bytes):
                    offset += len(chunk)
                    yield chunk
            return
        except STREAM_ERRORS as broken:
            if reopened >= reopens or offset >= size:
                raise
            reopened += 1
            logger.warning(
                "object stream broke off; reading on from where it stopped",
                extra={"key": get_kwargs.get("Key"), "offset": offset, "error": type(broken).__name__},
            )
