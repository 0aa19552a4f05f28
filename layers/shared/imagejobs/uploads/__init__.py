"""S3 upload triggers (docs/uploads.md): photos become image-to-image jobs, JSONL files become batches.

S3 ObjectCreated events reach S3IntakeFunction through the uploads queue. Every job
made here is sent to the jobs queue, so it goes through the one intake path (with its
idempotency); only uploads that cannot become a job at all are recorded here, as
REJECTED, with the reason per field.

- ``<inputs>/…/photo.png``: an image (magic bytes, size cap). Prompt and options come
  from, lowest precedence first, a recipe (``<recipes>/<name>.json``, chosen by the
  first sub-prefix or ``x-amz-meta-recipe``), a sidecar ``photo.png.json`` and the
  object's metadata (``x-amz-meta-prompt``, ``-model``, ``-aspect-ratio``, ``-output-prefix``).
- ``<inputs>/…/photo.png.json``: a sidecar; when its image already exists, it (re)builds that job.
- ``<batches>/…/file.jsonl``: one job per line, streamed; a report lands at ``file.jsonl.report.json``.
  The object's ``x-amz-meta-webhook-url`` is the webhookUrl of every line that names none.

Job ids are derived from the object (bucket, key, version or ETag) so a redelivered event
enqueues nothing new: the intake ignores a job id it has seen, and a batch whose report says
COMPLETE for this version is skipped.

Modules: ``events`` (the S3 event, the kind of upload, derived ids), ``objects`` (reading
objects), ``recipes`` (an image's job options), ``images`` (image and sidecar uploads),
``batches`` (JSONL batches), ``dispatch`` (one uploads-queue message), ``context`` (what
handling one needs: ``UploadContext``).
"""

from imagejobs.uploads.batches import (
    MAX_LINE_BYTES,
    CheckpointPolicy,
    process_batch,
)
from imagejobs.uploads.context import UploadContext
from imagejobs.uploads.dispatch import (
    FAILED_EVENT_RETRY_SECONDS,
    failed_event_retry_seconds,
    handle_upload_message,
)
from imagejobs.uploads.events import (
    S3ObjectRef,
    UploadEventError,
    UploadOutcome,
    classify,
    parse_upload_message,
)
from imagejobs.uploads.objects import STREAM_REOPENS

__all__ = [
    "FAILED_EVENT_RETRY_SECONDS",
    "MAX_LINE_BYTES",
    "STREAM_REOPENS",
    "CheckpointPolicy",
    "S3ObjectRef",
    "UploadContext",
    "UploadEventError",
    "UploadOutcome",
    "classify",
    "failed_event_retry_seconds",
    "handle_upload_message",
    "parse_upload_message",
    "process_batch",
]
