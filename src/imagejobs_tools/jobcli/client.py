"""`JobsClient`: the small typed API the CLI commands (and the local demo, and tests) use.

Clients are passed in; nothing here reads flags or prints.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import mimetypes
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import botocore.exceptions

from imagejobs_tools.jobcli.messages import SQS_MAX_MESSAGE_BYTES, OutgoingJob
from imagejobs_tools.jobcli.records import ALL_STATUSES, JobRecord, OutputObject
from imagejobs_tools.jobcli.target import SessionFactory, Target

if TYPE_CHECKING:
    from imagejobs.batches import BatchStore
    from imagejobs.budget import BudgetDay
    from imagejobs.store import JobStore
    from mypy_boto3_dynamodb.service_resource import Table
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_sqs.client import SQSClient

SQS_BATCH_MAX_ENTRIES = 10
DYNAMODB_BATCH_GET_MAX_KEYS = 100
# Attributes a KEYS_ONLY projection of ByStatus carries; anything else needs the base item.
_INDEX_KEY_ATTRIBUTES = frozenset({"jobId", "status", "updatedAt"})
# Errors that no retry of the same batch will fix: stop the whole submit.
_FATAL_SQS_CODES = frozenset(
    {
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
        "AccessDenied",
        "AccessDeniedException",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "ExpiredToken",
        "SignatureDoesNotMatch",
        "KMS.AccessDeniedException",
    }
)
_EXTENSION_PATTERN = re.compile(r"\.([A-Za-z0-9]{1,5})$")


@dataclass(frozen=True)
class SubmitResult:
    """What happened to one outgoing job: `message_id` when sent, `error` when not."""

    job_id: str
    source: str
    message_id: str | None = None
    error: str | None = None
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.message_id is not None


@dataclass(frozen=True)
class DownloadedFile:
    job_id: str
    key: str
    path: Path
    bytes: int
    sha256: str
    verified: bool  # the record had a sha256 and it matched
    skipped: bool = False  # already there with the recorded sha256


class ChecksumMismatch(Exception):
    def __init__(self, job_id: str, key: str, expected: str, actual: str) -> None:
        super().__init__(f"{job_id}: s3 object {key}: sha256 {actual} does not match the record's {expected}")
        self.job_id = job_id
        self.key = key
        self.expected = expected
        self.actual = actual


class JobsClient:
    """Submit job messages and read job records and outputs of one stack."""

    def __init__(
        self,
        sqs: SQSClient | None,
        table: Table | None,
        s3: S3Client | None,
        outputs: Mapping[str, str] | None = None,
        *,
        queue_url: str | None = None,
        max_send_attempts: int = 4,
        retry_delay: float = 0.2,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._sqs = sqs
        self._table = table
        self._s3 = s3
        self.outputs = dict(outputs or {})
        self.queue_url = queue_url or self.outputs.get("JobsQueueUrl")
        self._max_send_attempts = max_send_attempts
        self._retry_delay = retry_delay
        self._sleep = sleep

    @classmethod
    def from_target(
        cls,
        target: Target,
        *,
        queue: bool = True,
        table: bool = True,
        s3: bool = True,
        session_factory: SessionFactory = boto3.Session,
    ) -> JobsClient:
        """Clients for a resolved `Target`; a wanted resource the target lacks raises `TargetError`."""
        session = target.session(session_factory)
        kwargs: dict[str, Any] = {"endpoint_url": target.endpoint_url, "config": target.client_config()}
        queue_url = target.require_queue_url() if queue else None
        table_name = target.require_table_name() if table else None
        return cls(
            session.client("sqs", **kwargs) if queue else None,
            session.resource("dynamodb", **kwargs).Table(table_name) if table_name else None,
            session.client("s3", **kwargs) if s3 else None,
            target.outputs,
            queue_url=queue_url,
        )

    # -- submit -------------------------------------------------------------------------

    def submit_messages(self, jobs: Iterable[OutgoingJob]) -> Iterator[SubmitResult]:
        """Send with SendMessageBatch (≤10 entries, ≤256 KB a call), lazily, one result per job.

        Entries that fail on the server side are retried (with backoff) up to
        `max_send_attempts`; sender faults are reported at once.
        """
        batch: list[OutgoingJob] = []
        batch_bytes = 0
        for job in jobs:
            size = len(job.body.encode("utf-8"))
            if batch and (len(batch) == SQS_BATCH_MAX_ENTRIES or batch_bytes + size > SQS_MAX_MESSAGE_BYTES):
                yield from self._send_batch(batch)
                batch, batch_bytes = [], 0
            batch.append(job)
            batch_bytes += size
        if batch:
            yield from self._send_batch(batch)

    def _send_batch(self, batch: Sequence[OutgoingJob]) -> list[SubmitResult]:
        sqs, queue_url = self._require_sqs()
        pending = {f"m{i}": job for i, job in enumerate(batch)}
        results: dict[str, SubmitResult] = {}
        for attempt in range(1, self._max_send_attempts + 1):
            if attempt > 1:
                self._sleep(self._retry_delay * 2 ** (attempt - 2))
            entries = [{"Id": entry_id, "MessageBody": job.body} for entry_id, job in pending.items()]
            try:
                response = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)  # type: ignore[arg-type]
            except botocore.exceptions.ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code in _FATAL_SQS_CODES:
                    raise
                # The whole call failed (throttled, batch too long...): retry every entry.
                failures = {entry_id: f"{code}: {exc}" for entry_id in pending}
                sender_faults: set[str] = set()
            else:
                for sent in response.get("Successful", []):
                    job = pending.pop(sent["Id"])
                    results[sent["Id"]] = SubmitResult(
                        job.job_id, job.source, message_id=sent["MessageId"], attempts=attempt
                    )
                failures = {}
                sender_faults = set()
                for failed in response.get("Failed", []):
                    failures[failed["Id"]] = f"{failed.get('Code', '?')}: {failed.get('Message', '')}".strip()
                    if failed.get("SenderFault"):
                        sender_faults.add(failed["Id"])
            for entry_id in list(pending):
                is_last = attempt == self._max_send_attempts
                if entry_id in sender_faults or (is_last and entry_id in failures):
                    job = pending.pop(entry_id)
                    results[entry_id] = SubmitResult(
                        job.job_id, job.source, error=failures[entry_id], attempts=attempt
                    )
            if not pending:
                break
        for entry_id, job in pending.items():  # entries the responses never mentioned
            results[entry_id] = SubmitResult(
                job.job_id, job.source, error="not acknowledged by SQS", attempts=self._max_send_attempts
            )
        return [results[f"m{i}"] for i in range(len(batch))]

    def _require_sqs(self) -> tuple[SQSClient, str]:
        if self._sqs is None or not self.queue_url:
            raise RuntimeError("JobsClient has no SQS client or queue URL")
        return self._sqs, self.queue_url

    # -- records ------------------------------------------------------------------------

    def _require_table(self) -> Table:
        if self._table is None:
            raise RuntimeError("JobsClient has no DynamoDB table")
        return self._table

    def get(self, job_id: str) -> JobRecord | None:
        item = self._require_table().get_item(Key={"jobId": job_id}, ConsistentRead=True).get("Item")
        return None if item is None else JobRecord.from_item(item)

    def batch_get(self, job_ids: Iterable[str]) -> dict[str, JobRecord]:
        """Records by job id (BatchGetItem, 100 keys a call); ids without a record are absent."""
        table = self._require_table()
        unique_ids = list(dict.fromkeys(job_ids))
        records: dict[str, JobRecord] = {}
        for start in range(0, len(unique_ids), DYNAMODB_BATCH_GET_MAX_KEYS):
            keys: list[dict[str, Any]] = [
                {"jobId": job_id} for job_id in unique_ids[start : start + DYNAMODB_BATCH_GET_MAX_KEYS]
            ]
            attempt = 0
            while keys:
                if attempt:
                    self._sleep(min(self._retry_delay * 2 ** (attempt - 1), 5.0))
                response = table.meta.client.batch_get_item(
                    RequestItems={table.name: {"Keys": keys, "ConsistentRead": True}}
                )
                for item in response.get("Responses", {}).get(table.name, []):
                    record = JobRecord.from_item(item)
                    records[record.job_id] = record
                unprocessed: Mapping[str, Any] = response.get("UnprocessedKeys", {}).get(table.name, {})
                keys = list(unprocessed.get("Keys", []))
                attempt += 1
        return records

    def list_jobs(self, statuses: Sequence[str] = (), limit: int = 50) -> list[JobRecord]:
        """The newest `limit` jobs by `updatedAt`: a `ByStatus` query (newest first) per status, every
        status when none is given, merged. Never a scan: a scan's first page is in hash order, not time."""
        from imagejobs.store import JobStore  # the domain's query, not a second copy of it

        store = JobStore(self._require_table())
        per_status = [
            store.list_by_status(status, limit=limit) for status in dict.fromkeys(statuses or ALL_STATUSES)
        ]
        # Each list is newest first and holds at most `limit` items, so the newest `limit` overall
        # are among them: a k-way merge.
        merged = heapq.merge(*per_status, key=lambda item: str(item.get("updatedAt", "")), reverse=True)
        records = [JobRecord.from_item(item) for item in itertools.islice(merged, limit)]
        if any(set(record.data) <= _INDEX_KEY_ATTRIBUTES for record in records):
            # The index projects keys only: read the full records.
            full = self.batch_get(record.job_id for record in records)
            records = [full.get(record.job_id, record) for record in records]
        return records

    def batch(self, batch_id: str) -> dict[str, Any] | None:
        """The batch item (docs/batches.md): status, counters, where its results go; None if unknown."""
        return self.batch_store().get(batch_id)

    def batch_store(self) -> BatchStore:
        """The domain's batch items over this table: `submit --file` opens one per batch."""
        from imagejobs.batches import BatchStore

        return BatchStore(self._require_table())

    def batch_lines(self, batch_id: str) -> Iterator[JobRecord]:
        """A batch's records in line order, as the `ByBatch` index projects them (what a results
        line says), a page at a time; jobs still running included."""
        from imagejobs.batch_results import BatchRecords

        for record in BatchRecords(self._require_table()).in_line_order(batch_id, settled=False):
            yield JobRecord(data=record)

    def batch_records(self, batch_id: str) -> list[JobRecord]:
        """Every job record of a batch, whole, in line order (the `ByBatch` index, then BatchGetItem)."""
        job_ids = [record.job_id for record in self.batch_lines(batch_id)]
        full = self.batch_get(job_ids)
        return [full[job_id] for job_id in job_ids if job_id in full]

    def job_store(self) -> JobStore:
        """The domain's store over this table: cancel and retry use its conditional writes."""
        from imagejobs.store import JobStore

        return JobStore(self._require_table())

    def budget_day(self, day: str, limit: int) -> BudgetDay:
        """One UTC day's credit budget counters (docs/control.md); `limit` is the stack's."""
        from imagejobs.budget import read_day  # the domain's item layout, not a second copy of it

        return read_day(self._require_table(), day, limit)

    def budget_batch(self, batch_id: str, limit: int) -> BudgetDay:
        """One batch's credit budget counters; `limit` is the stack's CreditBudgetPerBatch."""
        from imagejobs.budget import read_batch

        return read_batch(self._require_table(), batch_id, limit)

    # -- outputs ------------------------------------------------------------------------

    def download(self, record: JobRecord, out_dir: Path) -> Iterator[DownloadedFile]:
        """Stream each output object to `out_dir/<jobId>/<n>.<ext>` (see `fetch`)."""
        job_dir = out_dir / record.job_id
        for index, output in enumerate(record.outputs):
            job_dir.mkdir(parents=True, exist_ok=True)
            destination = job_dir / f"{index}{output_extension(output)}"
            yield self.fetch(
                record.job_id, output.bucket, output.key, destination, sha256=output.sha256, size=output.bytes
            )

    def object_bytes(self, bucket: str, key: str) -> bytes:
        """One object's bytes (a contact sheet's thumbnail): small objects only."""
        if self._s3 is None:
            raise RuntimeError("JobsClient has no S3 client")
        return self._s3.get_object(Bucket=bucket, Key=key)["Body"].read()

    def fetch(
        self,
        job_id: str,
        bucket: str,
        key: str,
        destination: Path,
        *,
        sha256: str | None = None,
        size: int | None = None,
    ) -> DownloadedFile:
        """Stream one object to `destination` (through `.part`), verifying `sha256` when given.

        A file already there with that sha256 (else that size) is kept, not fetched again; anything
        else there (a partial or different file) is replaced. Raises `ChecksumMismatch` (the
        partial file is removed) on a bad object.
        """
        if self._s3 is None:
            raise RuntimeError("JobsClient has no S3 client")
        expected = sha256.lower() if sha256 else None
        if destination.exists():
            if expected and file_sha256(destination) == expected:
                return DownloadedFile(
                    job_id, key, destination, destination.stat().st_size, expected, True, True
                )
            if not expected and size is not None and destination.stat().st_size == size:
                digest = file_sha256(destination)
                return DownloadedFile(job_id, key, destination, size, digest, False, True)
        partial = destination.with_name(destination.name + ".part")
        try:
            with partial.open("wb") as stream:
                self._s3.download_fileobj(bucket, key, stream)
            # Hash after the download: s3transfer may write ranged parts out of order.
            digest = file_sha256(partial)
            if expected and digest != expected:
                raise ChecksumMismatch(job_id, key, expected, digest)
            partial.replace(destination)
        finally:
            partial.unlink(missing_ok=True)
        return DownloadedFile(job_id, key, destination, destination.stat().st_size, digest, bool(expected))


def output_extension(output: OutputObject) -> str:
    """The key's extension when it has one, else one from the content type, else `.bin`."""
    match = _EXTENSION_PATTERN.search(output.key.rsplit("/", 1)[-1])
    if match:
        return "." + match.group(1).lower()
    if output.content_type:
        guessed = mimetypes.guess_extension(output.content_type.split(";")[0].strip())
        if guessed:
            return ".jpg" if guessed in {".jpe", ".jpeg"} else guessed
    return ".bin"


def file_sha256(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
