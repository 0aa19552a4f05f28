"""S3 event notifications: the objects they name, what kind of upload each is, and the ids
derived from an upload (so a redelivered event enqueues nothing new).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from aws_lambda_powertools.utilities.data_classes import S3Event

from imagejobs.batches import RESULTS_SUFFIX, SUMMARY_SUFFIX
from imagejobs.config import TriggerPrefixSettings
from imagejobs.observability import logger

SIDECAR_SUFFIX = ".json"
BATCH_SUFFIX = ".jsonl"
REPORT_SUFFIX = ".report.json"

Kind = Literal["image", "sidecar", "batch", "unsupported", "ignored"]


class UploadEventError(ValueError):
    """The uploads-queue message is not an S3 event notification."""


@dataclass(frozen=True)
class S3ObjectRef:
    bucket: str
    key: str  # decoded (unquote_plus): moto encodes "/" as %2F, AWS encodes spaces as "+"
    etag: str | None = None
    version_id: str | None = None

    @property
    def identity(self) -> str:
        """What distinguishes this upload from another at the same key."""
        return self.version_id or (self.etag or "").strip('"')

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True)
class UploadOutcome:
    # "resume": a batch paused for time; its event is to be sent again, to resume at the checkpoint.
    action: Literal["ack", "resume"]
    kind: Kind
    reason: str
    key: str
    job_id: str | None = None
    report: Mapping[str, Any] | None = None

    @property
    def ack(self) -> bool:
        return self.action == "ack"


def parse_upload_message(body: str | bytes) -> list[S3ObjectRef]:
    """The ObjectCreated objects of one uploads-queue message; [] for ``s3:TestEvent`` and other events."""
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise UploadEventError(f"body is not JSON ({exc})") from None
    if not isinstance(document, dict):
        raise UploadEventError("body is not a JSON object")
    if document.get("Event") == "s3:TestEvent":
        return []
    if not isinstance(document.get("Records"), list):
        raise UploadEventError("body has no Records (not an S3 event notification)")
    refs = []
    for record in S3Event(document).records:
        if not record.event_name.startswith("ObjectCreated:"):
            logger.info("ignoring S3 event", extra={"event_name": record.event_name})
            continue
        obj = record.s3.get_object
        refs.append(
            S3ObjectRef(
                bucket=record.s3.bucket.name,
                key=_decode_key(obj.key),
                etag=obj.etag or None,
                version_id=version_of(obj.version_id),
            )
        )
    return refs


def _decode_key(raw: str) -> str:
    from urllib.parse import unquote_plus

    return unquote_plus(raw)


def version_of(value: Any) -> str | None:
    """A real version id, or None (unversioned buckets report none, or the literal "null")."""
    return str(value) if value and value != "null" else None


def classify(key: str, settings: TriggerPrefixSettings) -> tuple[Kind, str]:
    if key.startswith(settings.batches_prefix):
        if key.endswith(REPORT_SUFFIX):
            return "ignored", "a batch report this function wrote"
        if key.endswith((RESULTS_SUFFIX, SUMMARY_SUFFIX)):
            return "ignored", f"a batch's results (*{RESULTS_SUFFIX}, *{SUMMARY_SUFFIX} are reserved names)"
        if key.lower().endswith(BATCH_SUFFIX):
            return "batch", "JSONL batch"
        if key.endswith("/"):
            return "ignored", "folder placeholder"
        # A visible trace, not silence: the user meant a batch and gets a REJECTED record saying why.
        expected = f"batches are JSON Lines files named *{BATCH_SUFFIX}"
        return "unsupported", f"is not a {BATCH_SUFFIX} file ({expected})"
    if key.startswith(settings.inputs_prefix):
        if key.endswith("/"):
            return "ignored", "folder placeholder"
        if key.lower().endswith(SIDECAR_SUFFIX):
            return "sidecar", "sidecar JSON"
        return "image", "image upload"
    return "ignored", f"outside {settings.inputs_prefix} and {settings.batches_prefix}"


def trigger_prefix_problem(prefix: str | None, settings: TriggerPrefixSettings) -> str | None:
    """Why outputs under ``prefix`` would start new work (recursion), or None."""
    if not prefix:
        return None
    for trigger in (settings.inputs_prefix, settings.batches_prefix):
        if prefix.startswith(trigger) or trigger.startswith(prefix):
            return f"must not overlap {trigger} (outputs there would start new jobs)"
    return None


def derived_job_id(tag: str, *parts: Any) -> str:
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode("utf-8")).hexdigest()
    return f"{tag}-{digest[:32]}"
