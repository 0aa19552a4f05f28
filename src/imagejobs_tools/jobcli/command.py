"""`imagejobs submit|status|list|watch|download|batch …`: thin commands over `JobsClient`
(`webhook` has its own module).

boto3 and rich load inside the command functions so `imagejobs --help` stays fast.
Exit codes: 0 success; 1 the command ran but something failed (a line or job not
sent, a job not found, a checksum mismatch, `watch` ending with a job not in the
expected statuses or timing out); 2 bad arguments; 3 the stack cannot be found
or reached (target, credentials, region, AWS errors).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import textwrap
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from imagejobs.store import JobStatus

from imagejobs_tools.jobcli.records import ALL_STATUSES, TERMINAL_STATUSES
from imagejobs_tools.jobcli.render import count_of

if TYPE_CHECKING:
    from rich.console import Console

    from imagejobs_tools.jobcli.client import JobsClient
    from imagejobs_tools.jobcli.messages import OutgoingJob
    from imagejobs_tools.jobcli.records import JobRecord
    from imagejobs_tools.jobcli.sheet import SheetImage
    from imagejobs_tools.jobcli.target import Target

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_TARGET = 3
LAST_SUBMIT_FILE = Path(".imagejobs") / "last-submit.txt"
MAX_LISTED_FAILURES = 20
# Where the pipeline writes the results of a `submit --file` batch (its function may write there).
BATCH_RESULTS_PREFIX = "batch-results/"

TARGET_HELP = """\
target: --local (or IMAGEJOBS_LOCAL=1, or the default when .imagejobs/local-stack.json
exists here) uses the running local stack; --stack-name NAME [--region R] reads a deployed
stack's CloudFormation outputs; --queue-url/--table/--bucket override either.
exit codes: 0 ok, 1 something failed, 2 bad arguments, 3 stack not found or not reachable."""


def register(subparsers: Any) -> None:
    target = argparse.ArgumentParser(add_help=False)
    group = target.add_argument_group("target")
    group.add_argument("--local", action="store_true", help="use .imagejobs/local-stack.json (local stack)")
    group.add_argument("--stack-name", help="a deployed imagejobs CloudFormation stack")
    group.add_argument("--region", help="AWS region of the stack (default: the AWS config's)")
    group.add_argument("--profile", help="AWS profile (default: AWS_PROFILE / the default chain)")
    group.add_argument("--queue-url", help="jobs queue URL (overrides the stack output JobsQueueUrl)")
    group.add_argument("--table", dest="table_name", help="jobs table name (overrides JobsTableName)")
    group.add_argument("--bucket", dest="bucket_name", help="output bucket (overrides OutputBucketName)")
    group.add_argument(
        "--endpoint-url", help="send every AWS call here, e.g. a local stack URL (default: AWS_ENDPOINT_URL)"
    )
    common = {
        "parents": [target],
        "epilog": TARGET_HELP,
        "formatter_class": argparse.RawDescriptionHelpFormatter,
    }

    submit = subparsers.add_parser(
        "submit",
        help="send job messages to the jobs queue",
        description=_wrap(
            "Send one job (PROMPT) or every line of a JSONL file (--file) to the jobs queue and print the "
            "job ids. The CLI checks only the shape (a JSON object, a string jobId, under the 256 KB SQS "
            "limit); the pipeline validates the fields and records invalid jobs as REJECTED with field "
            "errors (see `imagejobs status`). A jobId is generated (job-<hex>) when not given; resending "
            "the same jobId never runs the job twice. The ids sent are also written to "
            f"{LAST_SUBMIT_FILE} for `watch --since-submit`. A --file is a batch (`imagejobs batch "
            "status|results|sheet`): every line's job gets its batchId and line number, and, when it "
            "names no jobId, the job id <batchId>-<line>."
        ),
        **common,
    )
    submit.add_argument("prompt", nargs="?", help="the prompt (or use --file)")
    submit.add_argument("--file", help="JSONL file of job messages, one JSON object a line ('-' = stdin)")
    submit.add_argument("--model", help="model (default: the pipeline's, gpt-image-2)")
    submit.add_argument("--aspect-ratio", help="aspect ratio, e.g. 1:1, 16:9, auto")
    submit.add_argument(
        "--input", dest="inputs", action="extend", nargs="+", default=[], metavar="URL_OR_S3URI",
        help="reference image: https:// URL or s3://<output bucket>/<key>",
    )  # fmt: skip
    submit.add_argument("--job-id", help="job id ([A-Za-z0-9_-]{1,80}; default: generated)")
    submit.add_argument(
        "--metadata", action="extend", nargs="+", default=[], metavar="K=V", help="metadata key=value"
    )
    submit.add_argument("--output-prefix", help="S3 key prefix for the outputs (relative)")
    submit.add_argument(
        "--webhook-url",
        help="where the job's state changes are POSTed (docs/webhooks.md); with --file, every line's "
        "that names none (a batch-wide webhook)",
    )
    submit.add_argument(
        "--batch-id",
        help="the batch of a --file (default: generated, b-<hex>); the same id again resumes it",
    )
    submit.add_argument("--json", action="store_true", help="print one JSON object per job")
    submit.set_defaults(func=_guarded(cmd_submit))

    status = subparsers.add_parser("status", help="show job records", **common)
    status.add_argument("job_ids", nargs="+", metavar="JOB_ID")
    status.add_argument("--json", action="store_true", help="print the whole record as JSON")
    status.set_defaults(func=_guarded(cmd_status))

    list_parser = subparsers.add_parser(
        "list",
        help="list job records, newest first",
        description=_wrap(
            "The newest --limit jobs by last update: a query of the ByStatus index per status "
            "(every status without --status), merged newest first. The status column shows BLOCKED "
            "or DEAD_LETTERED when derived from the record; the reason column says why a job is "
            "REJECTED, FAILED, blocked or dead-lettered (a rejected upload: its S3 key first). "
            "--json prints the records, each with `display` (status, reason) added."
        ),
        **common,
    )
    list_parser.add_argument(
        "--status", dest="statuses", action="append", type=str.upper, choices=ALL_STATUSES, default=[],
        metavar="STATUS", help=f"only this status (repeatable): {', '.join(ALL_STATUSES)}",
    )  # fmt: skip
    list_parser.add_argument("--limit", type=_positive_int, default=50, help="at most N records (default 50)")
    list_parser.add_argument("--json", action="store_true", help="print a JSON array of records")
    list_parser.set_defaults(func=_guarded(cmd_list))

    watch = subparsers.add_parser(
        "watch",
        help="follow jobs until they are terminal",
        description=_wrap(
            "Poll the job records (BatchGetItem) until every job is terminal "
            f"({', '.join(sorted(TERMINAL_STATUSES))}) or its message went to the dead-letter queue "
            "(DEAD_LETTERED), or --timeout, then print a summary. A BLOCKED job (the provider refused "
            "the API key, or no credits) is reported once with its reason and waited for: it goes on "
            "by itself once fixed. Exit 0 when every job ended in an --expect status (default "
            "COMPLETED), else 1."
        ),
        **common,
    )
    watch.add_argument("job_ids", nargs="*", metavar="JOB_ID")
    watch.add_argument("--file", help="file of job ids, one a line (or submit --json output)")
    watch.add_argument(
        "--since-submit", action="store_true", help=f"the jobs of the last submit ({LAST_SUBMIT_FILE})"
    )
    watch.add_argument(
        "--interval", type=_positive_float, default=2.0, help="seconds between polls (default 2)"
    )
    watch.add_argument(
        "--timeout", type=_positive_float, default=1800.0, help="give up after S seconds (1800)"
    )
    watch.add_argument(
        "--expect", action="append", type=str.upper, choices=sorted(TERMINAL_STATUSES), default=[],
        metavar="STATUS", help="a terminal status that counts as success (repeatable; default COMPLETED)",
    )  # fmt: skip
    watch.add_argument("--json", action="store_true", help="print the summary as JSON")
    watch.set_defaults(func=_guarded(cmd_watch))

    cancel = subparsers.add_parser(
        "cancel",
        help="cancel jobs: unsubmitted ones never reach the provider, running ones are stopped",
        description=_wrap(
            "Record each job CANCELLED (a conditional write: the pipeline never overwrites it), then "
            "stop its Step Functions executions. A job not yet submitted never reaches the provider "
            "and costs nothing; a running one keeps the credits already spent (the provider has no "
            "cancel endpoint). A finished job is left as it is, and the command says so; a job being "
            "submitted at that very moment is reported, to cancel again a few seconds later. Exit 1 "
            "when a job was not found or was being submitted."
        ),
        **common,
    )
    cancel.add_argument("job_ids", nargs="*", metavar="JOB_ID")
    cancel.add_argument("--batch", help="every job of this batch (records with this batchId)")
    cancel.add_argument("--reason", default="cancelled by the user", help="kept on the records")
    cancel.add_argument("--json", action="store_true", help="print one JSON object per job")
    cancel.set_defaults(func=_guarded(cmd_cancel))

    retry = subparsers.add_parser(
        "retry",
        help="re-send a batch's FAILED and TIMED_OUT jobs as new jobs",
        description=_wrap(
            "Send each FAILED or TIMED_OUT job of the batch again as a new job <jobId>-r1 (then -r2, "
            "...), with retryOf naming the original and the same request; the original records "
            "retriedAs first, so running retry twice sends nothing twice. SUBMIT_UNKNOWN jobs only "
            "with --include-unknown: they may already have been charged."
        ),
        **common,
    )
    retry.add_argument("--batch", required=True, help="the batch (records with this batchId)")
    retry.add_argument("--failed", action="store_true", required=True, help="FAILED and TIMED_OUT jobs")
    retry.add_argument(
        "--include-unknown", action="store_true", help="also SUBMIT_UNKNOWN jobs (may be charged twice)"
    )
    retry.add_argument("--json", action="store_true", help="print one JSON object per job")
    retry.set_defaults(func=_guarded(cmd_retry))

    budget = subparsers.add_parser(
        "budget",
        help="show the day's credit spend, reservations and limit",
        description=_wrap(
            "The credit budget of one UTC day (default today): the limit (the stack's CreditBudgetPerDay; "
            "0 = no limit, and then nothing is counted), credits spent (the provider's creditsUsed, "
            "SUBMIT_UNKNOWN jobs' reservations, less refunds), credits reserved by jobs being submitted, "
            "and what is left. Jobs over the budget wait (status WAITING_FOR_BUDGET in `list`). With "
            "--batch, the same for one batch (the stack's CreditBudgetPerBatch)."
        ),
        **common,
    )
    scope = budget.add_mutually_exclusive_group()
    scope.add_argument("--day", type=_utc_day, help="UTC day YYYY-MM-DD (default: today)")
    scope.add_argument("--batch", metavar="BATCH_ID", help="a batch's budget instead of a day's")
    budget.add_argument("--json", action="store_true", help="print the day as JSON")
    budget.set_defaults(func=_guarded(cmd_budget))

    register_batch(subparsers, common)

    download = subparsers.add_parser(
        "download",
        help="download job outputs",
        description=_wrap(
            "Stream each output of each job to DIR/<jobId>/<n>.<ext>, verifying the recorded sha256."
        ),
        **common,
    )
    download.add_argument("job_ids", nargs="*", metavar="JOB_ID")
    download.add_argument("--file", help="file of job ids, one a line")
    download.add_argument("--since-submit", action="store_true", help="the jobs of the last submit")
    download.add_argument("--out", default="downloads", help="output directory (default ./downloads)")
    download.set_defaults(func=_guarded(cmd_download))

    from imagejobs_tools.jobcli import webhook  # here: it imports this module's plumbing

    webhook.register(subparsers, common)


def register_batch(subparsers: Any, common: dict[str, Any]) -> None:
    batch = subparsers.add_parser(
        "batch",
        help="a batch's progress, outputs and contact sheet",
        description=_wrap(
            "A batch is a `submit --file` or a JSONL upload under batches/ (docs/batches.md); its id "
            "is printed by submit (b-<hex>) and is every job's batchId."
        ),
    )
    commands = batch.add_subparsers(dest="batch_command", metavar="COMMAND", required=True)
    status = commands.add_parser(
        "status",
        help="progress by status, credits, ETA and where the results are",
        description=_wrap(
            "The batch item's counters (jobs terminal, by status; the batch's size once its intake "
            "has read it all), credits (the summary's once COMPLETED, else summed over the records), "
            "the ETA at the rate jobs finished over the last 10 minutes, and the results files."
        ),
        **common,
    )
    status.add_argument("batch_id", metavar="BATCH_ID")
    status.add_argument("--json", action="store_true", help="print the progress as JSON")
    status.set_defaults(func=_guarded(cmd_batch_status))

    results = commands.add_parser(
        "results",
        help="download every output of the batch's COMPLETED jobs, and its results file",
        description=_wrap(
            "Each output of each COMPLETED job to DIR/<jobId>/<n>.<ext> as `imagejobs download` does "
            "(a file already there with the recorded sha256 is kept: run it again to resume), and "
            "DIR/results.jsonl: the pipeline's once the batch is COMPLETED, else one built from the "
            "records so far."
        ),
        **common,
    )
    results.add_argument("batch_id", metavar="BATCH_ID")
    results.add_argument("--out", help="output directory (default ./<BATCH_ID>)")
    results.set_defaults(func=_guarded(cmd_batch_results))

    sheet = commands.add_parser(
        "sheet",
        help="write the batch's contact sheet: one self-contained HTML page",
        description=_wrap(
            "One row per job in line order: thumbnails, prompt, status, credits, the failure with its "
            "reasons; buttons filter by status. Images are embedded (data: URIs) unless --images "
            "names the directory of an `imagejobs batch results`, which the page then links to."
        ),
        **common,
    )
    sheet.add_argument("batch_id", metavar="BATCH_ID")
    sheet.add_argument("--out", required=True, help="the HTML file to write, e.g. sheet.html")
    sheet.add_argument("--images", help="link images from this `batch results` directory, not embed them")
    sheet.set_defaults(func=_guarded(cmd_batch_sheet))


# -- plumbing -----------------------------------------------------------------------------


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=88)


def _utc_day(value: str) -> str:
    from datetime import date

    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a UTC day YYYY-MM-DD, got {value!r}") from None


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _error(message: str) -> None:
    print(f"imagejobs: {message}", file=sys.stderr, flush=True)


def _guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn target and AWS errors into one line on stderr and exit code 3."""

    def run(args: argparse.Namespace) -> int:
        import botocore.exceptions

        from imagejobs_tools.jobcli.target import TargetError, describe_aws_error

        try:
            return command(args)
        except TargetError as exc:
            _error(f"error: {exc}")
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            _error(f"error: {describe_aws_error(exc, f'imagejobs {args.command}')}")
        except KeyboardInterrupt:
            _error("interrupted")
            return 130
        return EXIT_TARGET

    return run


def resolve(args: argparse.Namespace) -> Target:
    from imagejobs_tools.jobcli.target import TargetOptions, resolve_target

    return resolve_target(
        TargetOptions(
            local=args.local,
            stack_name=args.stack_name,
            region=args.region,
            profile=args.profile,
            queue_url=args.queue_url,
            table_name=args.table_name,
            bucket_name=args.bucket_name,
            endpoint_url=args.endpoint_url,
        )
    )


def open_client(target: Target, *, queue: bool = False, table: bool = False, s3: bool = False) -> JobsClient:
    """A `JobsClient` with just the clients the command needs."""
    from imagejobs_tools.jobcli.client import JobsClient

    return JobsClient.from_target(target, queue=queue, table=table, s3=s3)


def _stderr_console() -> Console:
    """Where watch's progress goes (stdout stays for results)."""
    from rich.console import Console

    # soft_wrap: plain lines (no terminal, e.g. CI) are never wrapped at the console width.
    return Console(file=sys.stderr, soft_wrap=True)


def read_job_ids(args: argparse.Namespace) -> list[str]:
    """Job ids from the arguments, --file (ids or submit --json lines) and --since-submit."""
    job_ids = list(args.job_ids)
    paths: list[Path] = []
    if getattr(args, "file", None):
        paths.append(Path(args.file))
    if getattr(args, "since_submit", False):
        if not LAST_SUBMIT_FILE.exists():
            raise SystemExit(_usage_error(f"no {LAST_SUBMIT_FILE} here: run `imagejobs submit` first"))
        paths.append(LAST_SUBMIT_FILE)
    for path in paths:
        try:
            with path.open(encoding="utf-8") as stream:
                job_ids.extend(_ids_from_lines(stream))
        except OSError as exc:
            raise SystemExit(_usage_error(f"cannot read {path}: {exc.strerror or exc}")) from exc
    if not job_ids:
        raise SystemExit(_usage_error("no job ids: give JOB_ID ..., --file or --since-submit"))
    return list(dict.fromkeys(job_ids))


def _ids_from_lines(lines: Iterable[str]) -> Iterator[str]:
    for line in lines:
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if text.startswith("{"):
            try:
                job_id = json.loads(text).get("jobId")
            except (ValueError, AttributeError):
                job_id = None
            if isinstance(job_id, str) and job_id:
                yield job_id
            continue
        yield text.split()[0]


def _usage_error(message: str) -> int:
    _error(f"error: {message}")
    return 2


# -- commands -----------------------------------------------------------------------------


def cmd_submit(args: argparse.Namespace) -> int:
    import botocore.exceptions

    from imagejobs_tools.jobcli.messages import (
        LineError,
        MessageShapeError,
        batch_id_problem,
        build_message,
        iter_jsonl,
        parse_metadata,
        prepare,
    )

    if (args.prompt is None) == (args.file is None):
        return _usage_error("give either a PROMPT or --file JOBS.jsonl")
    if args.file and args.job_id:
        return _usage_error("--job-id applies to a single PROMPT, not to --file (put jobId in each line)")
    if args.batch_id is not None:
        if args.file is None:
            return _usage_error("--batch-id applies to --file, not to a single PROMPT")
        if (problem := batch_id_problem(args.batch_id)) is not None:
            return _usage_error(problem)
    try:
        metadata = parse_metadata(args.metadata)
        message = build_message(
            args.prompt or "",
            model=args.model,
            aspect_ratio=args.aspect_ratio,
            input_urls=args.inputs,
            job_id=args.job_id,
            metadata=metadata,
            output_prefix=args.output_prefix,
            webhook_url=args.webhook_url,
        )
        if args.file is None:
            single_job = prepare(message, "argv")
        else:
            # What every line of the file has unless it says otherwise.
            line_defaults = {
                name: value for name, value in message.items() if name not in ("jobId", "prompt")
            }
    except MessageShapeError as exc:
        return _usage_error(str(exc))

    target = resolve(args)
    client = open_client(target, queue=True, table=args.file is not None)
    batch_id: str | None = None  # every --file is a batch
    bad_line_sources: list[str] = []  # the first few, for the summary
    bad_lines = 0
    send_failures = 0
    sent = 0

    def outgoing(stream: Any) -> Iterator[OutgoingJob]:
        nonlocal bad_lines
        for item in iter_jsonl(iter(lambda: stream.read(65536), b""), args.file, line_defaults, batch_id):
            if isinstance(item, LineError):
                bad_lines += 1
                if len(bad_line_sources) < MAX_LISTED_FAILURES:
                    bad_line_sources.append(item.source)
                _error(str(item))
            else:
                yield item

    with contextlib.ExitStack() as stack:
        remember = stack.enter_context(_LastSubmitWriter())
        if args.file is None:
            results = client.submit_messages([single_job])
        else:
            try:
                batch_id = args.batch_id or _new_batch_id(args.file)
                # Binary lines: a line that is not UTF-8 is reported like any other bad line.
                stream = sys.stdin.buffer if args.file == "-" else stack.enter_context(open(args.file, "rb"))
            except OSError as exc:
                return _usage_error(f"cannot read {args.file}: {exc.strerror or exc}")
            _open_batch(client, target, batch_id, args.file, args.webhook_url)
            results = client.submit_messages(outgoing(stream))
        try:
            for result in results:
                if result.ok:
                    sent += 1
                    remember(result.job_id)
                    line = {"jobId": result.job_id, "source": result.source, "messageId": result.message_id}
                    line |= {"batchId": batch_id} if batch_id else {}
                    print(json.dumps(line) if args.json else result.job_id, flush=True)
                else:
                    send_failures += 1
                    attempts = f"{result.attempts} attempts"
                    _error(f"{result.source}: {result.job_id}: not sent ({attempts}): {result.error}")
                    if args.json:
                        failure = {"jobId": result.job_id, "source": result.source, "error": result.error}
                        print(json.dumps(failure), flush=True)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError, KeyboardInterrupt):
            # Say how far it got (the ids printed are the ones sent), then the one-line error.
            _error(f"stopped after sending {count_of(sent, 'job')}")
            if batch_id is not None:
                _error(f"batch {batch_id} left open: run the same command with --batch-id {batch_id}")
            raise

    if batch_id is not None:
        # Only the lines sent have (or will have) a record: the batch completes when they are done.
        client.batch_store().set_expected(batch_id, sent)
        failed = bad_lines + send_failures
        where = f"{target.description} as batch {batch_id}"
        if failed:
            more = " …" if bad_lines > len(bad_line_sources) else ""
            listed = f"; bad lines: {', '.join(bad_line_sources)}{more}" if bad_lines else ""
            _error(
                f"sent {count_of(sent, 'job')} to {where}; {failed} not sent "
                f"({bad_lines} bad lines, {send_failures} send failures){listed}"
            )
        else:
            _error(f"sent {count_of(sent, 'job')} to {where}")
        _error(f"follow it with: imagejobs batch status {batch_id}")
    return EXIT_FAILED if bad_lines or send_failures else EXIT_OK


def _new_batch_id(file: str) -> str:
    """A fresh batch id: a file's content is hashed in a first pass (streamed); stdin is read once."""
    from imagejobs_tools.jobcli.client import file_sha256
    from imagejobs_tools.jobcli.messages import new_batch_id

    return new_batch_id(None if file == "-" else file_sha256(Path(file)), time.time())


def _open_batch(
    client: JobsClient, target: Target, batch_id: str, file: str, webhook_url: str | None
) -> None:
    """The batch item, before any job of it is sent (its jobs are counted in it as they finish;
    its "Batch Completed" goes to the webhook too)."""
    from imagejobs.batches import BatchFiles

    files = BatchFiles(target.require_bucket_name(), f"{BATCH_RESULTS_PREFIX}{batch_id}")
    source = {"file": "<stdin>" if file == "-" else Path(file).name}
    client.batch_store().open(batch_id, files, source, webhook_url=webhook_url)


class _LastSubmitWriter:
    """Writes the ids sent to .imagejobs/last-submit.txt as they go (for watch --since-submit)."""

    def __init__(self) -> None:
        self._stream: Any = None
        self._failed = False

    def __enter__(self) -> Callable[[str], None]:
        return self.remember

    def remember(self, job_id: str) -> None:
        if self._failed:
            return
        try:
            if self._stream is None:
                LAST_SUBMIT_FILE.parent.mkdir(parents=True, exist_ok=True)
                self._stream = LAST_SUBMIT_FILE.open("w", encoding="utf-8")
            self._stream.write(job_id + "\n")
        except OSError as exc:
            self._failed = True
            _error(f"warning: cannot write {LAST_SUBMIT_FILE}: {exc.strerror or exc}")

    def __exit__(self, *exc_info: object) -> None:
        if self._stream is not None:
            self._stream.close()


def cmd_status(args: argparse.Namespace) -> int:
    from imagejobs_tools.jobcli.render import status_lines

    target = resolve(args)
    client = open_client(target, table=True)
    missing = 0
    for index, job_id in enumerate(dict.fromkeys(args.job_ids)):
        record = client.get(job_id)
        if record is None:
            missing += 1
            _error(
                f"no record for job '{job_id}' in {target.description} "
                "(a just-submitted job gets one when the pipeline takes its message)"
            )
            continue
        if args.json:
            print(json.dumps(record.to_json(), sort_keys=True))
        else:
            if index:
                print()
            print("\n".join(status_lines(record)), flush=True)
    return EXIT_FAILED if missing else EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    from imagejobs_tools.jobcli.render import list_lines

    target = resolve(args)
    client = open_client(target, table=True)
    records = client.list_jobs(args.statuses, limit=args.limit)
    if args.json:
        print(json.dumps([record.to_json() for record in records], sort_keys=True))
    elif records:
        print("\n".join(list_lines(records)))
    else:
        _error(f"no jobs{' with status ' + ', '.join(args.statuses) if args.statuses else ''}")
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace) -> int:
    from imagejobs.cancel import cancel_job

    if not args.job_ids and not args.batch:
        _error("error: give job ids or --batch B")
        return 2
    target = resolve(args)
    client = open_client(target, table=True)
    job_ids = list(dict.fromkeys(args.job_ids))
    if args.batch:
        job_ids += [r.job_id for r in client.batch_records(args.batch) if r.job_id not in job_ids]
        if not job_ids:
            _error(f"no jobs of batch {args.batch!r} in {target.description}")
            return EXIT_FAILED
    sfn = target.session().client(
        "stepfunctions", endpoint_url=target.endpoint_url, config=target.client_config()
    )
    store = client.job_store()
    unsettled = 0
    for job_id in job_ids:
        outcome = cancel_job(job_id, store=store, sfn=sfn, reason=args.reason)
        unsettled += outcome.result in ("not_found", "in_flight")
        if args.json:
            shown = {"jobId": job_id, "result": outcome.result, "status": outcome.status}
            shown |= {"creditsUsed": outcome.credits_used, "stopped": list(outcome.stopped_executions)}
            print(json.dumps(shown, sort_keys=True))
        else:
            print(outcome.message, flush=True)
    return EXIT_FAILED if unsettled else EXIT_OK


def cmd_retry(args: argparse.Namespace) -> int:
    from imagejobs import retry

    from imagejobs_tools.jobcli.messages import OutgoingJob

    target = resolve(args)
    client = open_client(target, queue=True, table=True)
    store = client.job_store()
    statuses = (*retry.RETRYABLE, *(retry.MAYBE_CHARGED if args.include_unknown else ()))
    batch = client.batch_records(args.batch)
    chosen = [record for record in batch if record.status in statuses]
    if args.include_unknown and any(r.status in retry.MAYBE_CHARGED for r in chosen):
        _error(
            "warning: SUBMIT_UNKNOWN jobs may already have been charged by the provider; "
            "their retries may be charged again"
        )
    failed = 0
    for record in chosen:
        linked = record.data.get("retriedAs")
        new_id = str(linked) if linked else retry.retry_id(record.data)
        if linked and client.get(new_id) is not None:
            result = f"already retried as {new_id}"
        elif not linked and (problem := retry.retry_problem(record.data)):
            failed += 1
            result = f"not retried: {problem}"
        elif not linked and not store.link_retry(record.job_id, new_id, statuses).applied:
            result = "not retried: its record changed meanwhile (run retry again)"
            failed += 1
        else:
            body = json.dumps(retry.retry_message(record.data, new_id), separators=(",", ":"))
            [sent] = client.submit_messages([OutgoingJob(new_id, body, record.job_id)])
            failed += not sent.ok
            result = f"sent as {new_id}" if sent.ok else f"not sent: {sent.error} (run retry again)"
        if args.json:
            print(json.dumps({"jobId": record.job_id, "status": record.status, "result": result}))
        else:
            print(f"{record.job_id} ({record.status}): {result}", flush=True)
    if not chosen:
        print(f"no {' or '.join(statuses)} jobs in batch {args.batch!r}")
    return EXIT_FAILED if failed else EXIT_OK


def cmd_budget(args: argparse.Namespace) -> int:
    from imagejobs import budget

    from imagejobs_tools.jobcli.render import budget_lines

    target = resolve(args)
    client = open_client(target, table=True)
    if args.batch:
        limit = int(target.outputs.get("CreditBudgetPerBatch") or 0)
        counters = client.budget_batch(args.batch, limit)
    else:
        limit = int(target.outputs.get("CreditBudgetPerDay") or 0)
        counters = client.budget_day(args.day or budget.day_of(time.time()), limit)
    if args.json:
        document = counters.to_dict()
        if args.batch:
            document = {"batch": document.pop("day"), **document}
        print(json.dumps(document, sort_keys=True))
    else:
        print("\n".join(budget_lines(counters, batch=bool(args.batch))))
    return EXIT_OK


def cmd_watch(args: argparse.Namespace) -> int:
    from imagejobs_tools.jobcli.render import record_json, summary_lines
    from imagejobs_tools.jobcli.watch import make_view, watch_jobs

    job_ids = read_job_ids(args)
    expected = set(args.expect or [JobStatus.COMPLETED])
    target = resolve(args)
    client = open_client(target, table=True)
    view = make_view(_stderr_console(), job_ids)
    try:
        outcome = watch_jobs(client, job_ids, interval=args.interval, timeout=args.timeout, view=view)
    finally:
        view.close()
    if args.json:
        summary = {
            "timedOut": outcome.timed_out,
            "jobs": [record_json(outcome.records.get(job_id), job_id) for job_id in job_ids],
        }
        print(json.dumps(summary, sort_keys=True))
    else:
        print("\n".join(summary_lines(job_ids, outcome.records)))
    counts: dict[str, int] = {}
    for status in outcome.display_statuses().values():
        counts[status] = counts.get(status, 0) + 1
    tally = ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
    timed_out = f"timed out after {args.timeout:g}s; " if outcome.timed_out else ""
    _error(f"{timed_out}{count_of(len(job_ids), 'job')}: {tally}")
    blocked = [r for r in outcome.records.values() if r is not None and r.blocked_reason is not None]
    if blocked:
        reasons = sorted({str(record.blocked_reason) for record in blocked})
        _error(
            f"{count_of(len(blocked), 'job')} blocked ({'; '.join(reasons)}): "
            "fix it and they go on by themselves "
            "(the queue retries them until its maxReceiveCount, then they are dead-lettered)"
        )
    return EXIT_OK if outcome.all_in(expected) else EXIT_FAILED


def cmd_download(args: argparse.Namespace) -> int:
    import botocore.exceptions

    from imagejobs_tools.jobcli.client import ChecksumMismatch
    from imagejobs_tools.jobcli.target import describe_aws_error

    job_ids = read_job_ids(args)
    target = resolve(args)
    client = open_client(target, table=True, s3=True)
    out_dir = Path(args.out)
    records = client.batch_get(job_ids)
    failed = 0
    for job_id in job_ids:
        record = records.get(job_id)
        if record is None:
            failed += 1
            _error(f"{job_id}: no record in {target.description}")
            continue
        if not record.outputs:
            _error(f"{job_id}: skipped, no outputs (status {record.status})")
            continue
        try:
            for downloaded in client.download(record, out_dir):
                note = "already there" if downloaded.skipped else f"{downloaded.bytes} bytes"
                check = "sha256 ok" if downloaded.verified else "no sha256 recorded"
                print(f"{downloaded.path}\t{note}, {check}", flush=True)
        except ChecksumMismatch as exc:
            failed += 1
            _error(f"error: {exc}")
        except botocore.exceptions.ClientError as exc:
            failed += 1
            _error(f"error: {describe_aws_error(exc, f'downloading the outputs of {job_id}')}")
        except OSError as exc:
            failed += 1
            _error(f"error: {job_id}: cannot write under {out_dir}: {exc.strerror or exc}")
    return EXIT_FAILED if failed else EXIT_OK


# -- batches ------------------------------------------------------------------------------


def _require_batch(client: JobsClient, target: Target, batch_id: str) -> dict[str, Any] | None:
    batch = client.batch(batch_id)
    if batch is None:
        _error(
            f"error: no batch {batch_id!r} in {target.description} (a batch is known once "
            "`submit --file` or the intake of its upload has opened it; ids look like b-<hex>)"
        )
    return batch


def cmd_batch_status(args: argparse.Namespace) -> int:
    from imagejobs_tools.jobcli.batchstatus import batch_progress, progress_lines

    target = resolve(args)
    client = open_client(target, table=True)
    batch = _require_batch(client, target, args.batch_id)
    if batch is None:
        return EXIT_FAILED
    # Read only while the batch is not COMPLETED (its summary has the credits then).
    records = (record.data for record in client.batch_lines(args.batch_id))
    progress = batch_progress(batch, records, time.time())
    if args.json:
        print(json.dumps(progress.to_json(), sort_keys=True))
    else:
        print("\n".join(progress_lines(progress)))
    return EXIT_OK


def cmd_batch_results(args: argparse.Namespace) -> int:
    from imagejobs.batches import COMPLETED, BatchFiles

    target = resolve(args)
    client = open_client(target, table=True, s3=True)
    batch = _require_batch(client, target, args.batch_id)
    if batch is None:
        return EXIT_FAILED
    out_dir = Path(args.out or args.batch_id)
    files = BatchFiles.of(batch)
    results_uri = f"s3://{files.bucket}/{files.results_key}"
    written = batch.get("batchStatus") == COMPLETED
    results_path = out_dir / "results.jsonl"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        # Until the pipeline's is written, one from the records so far (to the side: a crash leaves none).
        built = None if written else results_path.with_name(results_path.name + ".part").open("wb")
    except OSError as exc:
        return _usage_error(f"cannot write under {out_dir}: {exc.strerror or exc}")
    with built or contextlib.nullcontext():
        tally = _download_batch(client, args.batch_id, batch, out_dir, built)
    if built is not None:
        Path(built.name).replace(results_path)
        status = batch.get("batchStatus")
        note = f"built from the records (the batch is {status}; {results_uri} is written once it completes)"
    else:
        client.fetch(args.batch_id, files.bucket, files.results_key, results_path)
        note = f"the pipeline's {results_uri}"
    _error(f"{results_path}: {note}")
    _error(
        f"{out_dir}: {count_of(tally.downloaded, 'file')} downloaded, {tally.kept} already there; "
        f"{count_of(tally.failed, 'job')} failed; "
        f"{count_of(tally.not_completed, 'job')} not COMPLETED (no outputs)"
    )
    return EXIT_FAILED if tally.failed else EXIT_OK


@dataclass
class _BatchDownload:
    downloaded: int = 0
    kept: int = 0  # already there with the recorded sha256 (a resumed run)
    failed: int = 0
    not_completed: int = 0


def _download_batch(
    client: JobsClient, batch_id: str, batch: Mapping[str, Any], out_dir: Path, results: IO[bytes] | None
) -> _BatchDownload:
    """Each COMPLETED job's outputs, with a progress bar on stderr; each line to `results` if given."""
    import botocore.exceptions
    from imagejobs.batch_results import encoded_result_line
    from rich.progress import Progress

    from imagejobs_tools.jobcli.batchstatus import terminal_counts
    from imagejobs_tools.jobcli.client import ChecksumMismatch
    from imagejobs_tools.jobcli.target import describe_aws_error

    tally = _BatchDownload()
    with Progress(console=_stderr_console()) as progress:
        bar = progress.add_task("outputs", total=terminal_counts(batch).get(JobStatus.COMPLETED))
        for record in client.batch_lines(batch_id):
            if results is not None:
                results.write(encoded_result_line(record.data))
            if record.status != JobStatus.COMPLETED:
                tally.not_completed += 1
                continue
            try:
                for downloaded in client.download(record, out_dir):
                    if downloaded.skipped:
                        tally.kept += 1
                    else:
                        tally.downloaded += 1
            except ChecksumMismatch as exc:
                tally.failed += 1
                progress.console.print(f"imagejobs: error: {exc}")
            except botocore.exceptions.ClientError as exc:
                tally.failed += 1
                doing = f"downloading the outputs of {record.job_id}"
                progress.console.print(f"imagejobs: error: {describe_aws_error(exc, doing)}")
            except OSError as exc:
                tally.failed += 1
                progress.console.print(
                    f"imagejobs: error: {record.job_id}: cannot write under {out_dir}: {exc}"
                )
            progress.advance(bar)
    return tally


def cmd_batch_sheet(args: argparse.Namespace) -> int:
    from imagejobs_tools.jobcli.batchstatus import terminal_counts
    from imagejobs_tools.jobcli.sheet import SheetRow, render_sheet, sheet_row

    images_dir = Path(args.images) if args.images else None
    if images_dir is not None and not images_dir.is_dir():
        return _usage_error(
            f"--images: {images_dir} is not a directory (run `imagejobs batch results` first)"
        )
    out = Path(args.out)
    target = resolve(args)
    client = open_client(target, table=True, s3=images_dir is None)
    batch = _require_batch(client, target, args.batch_id)
    if batch is None:
        return EXIT_FAILED
    tally = (
        ", ".join(f"{n} {status}" for status, n in terminal_counts(batch).items()) or "no job finished yet"
    )
    written = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    subtitle = f"{batch.get('batchStatus')}: {tally}; written {written}"
    counts = {"jobs": 0, "images": 0}

    def rows() -> Iterator[SheetRow]:
        for record in client.batch_lines(args.batch_id):
            images = _sheet_images(client, record, images_dir, out.parent)
            counts["jobs"] += 1
            counts["images"] += len(images)
            yield sheet_row(record, images)

    partial = out.with_name(out.name + ".part")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with partial.open("w", encoding="utf-8") as stream:
            stream.writelines(render_sheet(args.batch_id, subtitle, rows()))
        partial.replace(out)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        return _usage_error(f"cannot write {out}: {exc.strerror or exc}")
    how = f"linked from {images_dir}" if images_dir is not None else "embedded"
    _error(f"wrote {out}: {count_of(counts['jobs'], 'job')}, {count_of(counts['images'], 'image')} ({how})")
    return EXIT_OK


def _sheet_images(
    client: JobsClient, record: JobRecord, images_dir: Path | None, page_dir: Path
) -> list[SheetImage]:
    """A COMPLETED job's outputs for the sheet: embedded, or the files `batch results` wrote."""
    import mimetypes
    import os

    import botocore.exceptions

    from imagejobs_tools.jobcli.client import output_extension
    from imagejobs_tools.jobcli.sheet import SheetImage, data_uri
    from imagejobs_tools.jobcli.target import describe_aws_error

    if record.status != JobStatus.COMPLETED:
        return []
    images = []
    for index, output in enumerate(record.outputs):
        alt = f"{record.job_id} output {index}"
        if images_dir is None:
            try:
                body = client.object_bytes(output.bucket, output.key)
            except botocore.exceptions.ClientError as exc:
                # One missing object (e.g. expired by a lifecycle rule) leaves its row without it.
                _error(f"warning: {describe_aws_error(exc, f'reading s3://{output.bucket}/{output.key}')}")
                continue
            content_type = output.content_type or mimetypes.guess_type(output.key)[0]
            src = data_uri(content_type, body)
        else:
            path = images_dir / record.job_id / f"{index}{output_extension(output)}"
            src = Path(os.path.relpath(path, page_dir)).as_posix()
        images.append(SheetImage(src, alt))
    return images
