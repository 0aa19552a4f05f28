"""LogView: what the local stack's console shows of the functions' output."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any
from unittest import mock

import pytest

from imagejobs_tools.local.logview import FunctionLogLine, LogFormat, LogView

REQUEST_ID = "3f1c2a9e-1111-2222-3333-444455556666"
READ_AT = 1_800_000_000.25
CLOCK = datetime.fromtimestamp(READ_AT).strftime("%H:%M:%S.250")


class FakeContext:
    function_name = "imagejobs-local-PollFunction-7Q2M"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:imagejobs-local-PollFunction-7Q2M"
    aws_request_id = REQUEST_ID


@contextlib.contextmanager
def powertools_lines() -> Iterator[io.StringIO]:
    """What our Logger writes (its own JSON formatter), into a StringIO."""
    from imagejobs.observability import logger

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logger.registered_formatter)
    logger._logger.addHandler(handler)
    try:
        yield stream
    finally:
        logger._logger.removeHandler(handler)


def handler_output(body: Callable[[], None]) -> list[str]:
    """The lines a handler decorated as ours are (inject_lambda_context) writes while running `body`."""
    from imagejobs.observability import logger

    @logger.inject_lambda_context(clear_state=True)
    def handler(event: dict[str, Any], context: Any) -> None:
        body()

    with powertools_lines() as stream:
        handler({}, FakeContext())
    return stream.getvalue().splitlines()


def line(text: str, request_id: str | None = REQUEST_ID, stream: str = "stdout") -> FunctionLogLine:
    return FunctionLogLine(
        logical_id="PollFunction",
        function_name=FakeContext.function_name,
        memory_mb=256,
        request_id=request_id,
        stream=stream,
        text=text,
        time=READ_AT,
    )


def shown(*texts: str, log_format: LogFormat = "text", show_metrics: bool = False) -> list[str]:
    out = io.StringIO()
    view = LogView(out, log_format=log_format, show_metrics=show_metrics)
    for text in texts:
        view(line(text))
    return out.getvalue().splitlines()


def test_a_log_event_is_one_short_line_with_time_function_request_job_level_and_message() -> None:
    from imagejobs.observability import bind_job, logger, unbind_job

    def body() -> None:
        bind_job("job-123", task_id="tsk-9", model="gpt-image-2")
        logger.info("polled the provider", extra={"status": "RUNNING"})
        unbind_job()

    assert shown(*handler_output(body)) == [
        f"{CLOCK} PollFunction 3f1c2a9e job=job-123 INFO polled the provider"
    ]


@pytest.mark.parametrize("key", ["jobId", "job_id"])
def test_the_job_id_also_comes_from_explicit_keys(key: str) -> None:
    from imagejobs.observability import logger

    [text] = handler_output(lambda: logger.warning("upload enqueued as a job", extra={key: "job-7"}))
    assert shown(text) == [f"{CLOCK} PollFunction 3f1c2a9e job=job-7 WARNING upload enqueued as a job"]


def test_an_event_without_a_job_has_no_job_column() -> None:
    from imagejobs.observability import logger

    [text] = handler_output(lambda: logger.warning("no job here"))
    assert shown(text) == [f"{CLOCK} PollFunction 3f1c2a9e WARNING no job here"]


def test_an_exception_adds_its_last_line() -> None:
    from imagejobs.observability import bind_job, logger, unbind_job

    def body() -> None:
        bind_job("job-123")
        try:
            raise TimeoutError("provider did not answer in 10 s")
        except TimeoutError:
            logger.exception("provider call failed")
        unbind_job()

    [text] = handler_output(body)
    assert "Traceback" in json.loads(text)["exception"]  # the real multi-line traceback
    assert shown(text) == [
        f"{CLOCK} PollFunction 3f1c2a9e job=job-123 ERROR provider call failed"
        " | TimeoutError: provider did not answer in 10 s"
    ]


def test_a_multi_line_message_stays_on_one_line() -> None:
    from imagejobs.observability import logger

    [text] = handler_output(lambda: logger.error("first\nsecond"))
    assert shown(text) == [f"{CLOCK} PollFunction 3f1c2a9e ERROR first\\nsecond"]


def test_plain_lines_are_shown_as_written_and_init_lines_say_init() -> None:
    out = io.StringIO()
    view = LogView(out)
    view(line("Traceback (most recent call last):", request_id=None, stream="stderr"))
    view(line("/x/app.py:3: DeprecationWarning: old", request_id=None, stream="stderr"))
    view(line("hello from print"))
    assert out.getvalue().splitlines() == [
        f"{CLOCK} PollFunction init     Traceback (most recent call last):",
        f"{CLOCK} PollFunction init     /x/app.py:3: DeprecationWarning: old",
        f"{CLOCK} PollFunction 3f1c2a9e hello from print",
    ]


def emf_blob() -> str:
    """What Powertools Metrics prints when a handler's metrics are flushed."""
    from aws_lambda_powertools import Metrics

    metrics = Metrics(namespace="ImageJobs", service="imagejobs")
    metrics.add_metric(name="JobsCompleted", unit="Count", value=1)
    metrics.add_metric(name="JobLatencySeconds", unit="Seconds", value=2.5)
    printed = io.StringIO()
    # Other tests in this process may leave metrics disabled through the environment.
    with (
        mock.patch.dict(os.environ, {"POWERTOOLS_METRICS_DISABLED": "false"}),
        contextlib.redirect_stdout(printed),
    ):
        metrics.flush_metrics()
    [blob] = printed.getvalue().splitlines()
    return blob


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_metric_blobs_are_hidden_unless_asked_for(log_format: LogFormat) -> None:
    blob = emf_blob()
    assert "CloudWatchMetrics" in json.loads(blob)["_aws"]
    assert shown(blob, log_format=log_format) == []
    assert len(shown(blob, log_format=log_format, show_metrics=True)) == 1


def test_shown_metric_blobs_name_each_metric_in_text() -> None:
    assert shown(emf_blob(), show_metrics=True) == [
        f"{CLOCK} PollFunction 3f1c2a9e metrics JobsCompleted=1 Count, JobLatencySeconds=2.5 Seconds"
    ]


REPORT = (
    f"REPORT RequestId: {REQUEST_ID}\tDuration: 12.31 ms\tBilled Duration: 13 ms\t"
    "Memory Size: 256 MB\tMax Memory Used: 71 MB"
)


def test_start_end_and_warm_reports_are_hidden_in_text() -> None:
    assert (
        shown(f"START RequestId: {REQUEST_ID} Version: $LATEST", f"END RequestId: {REQUEST_ID}", REPORT) == []
    )


def test_a_cold_start_report_is_shown_shortened() -> None:
    assert shown(REPORT + "\tInit Duration: 412.50 ms") == [
        f"{CLOCK} PollFunction 3f1c2a9e cold start: init 412.50 ms, duration 12.31 ms,"
        " max memory 71 of 256 MB"
    ]


def test_a_report_with_single_spaces_between_fields_is_read_too() -> None:
    report = REPORT.replace("\t", " ") + " Init Duration: 5.00 ms"
    assert shown(report)[0].endswith("cold start: init 5.00 ms, duration 12.31 ms, max memory 71 of 256 MB")


def test_a_timeout_is_always_shown() -> None:
    runtime_line = f"2027-01-15T08:00:00.250Z {REQUEST_ID} Task timed out after 30.00 seconds"
    assert shown(runtime_line) == [f"{CLOCK} PollFunction 3f1c2a9e Task timed out after 30.00 seconds"]


def test_json_format_passes_the_functions_json_through_unchanged() -> None:
    from imagejobs.observability import bind_job, logger, unbind_job

    def body() -> None:
        bind_job("job-123")
        logger.info("polled the provider")
        unbind_job()

    [text] = handler_output(body)
    assert shown(text, log_format="json") == [text]
    event = json.loads(text)  # Powertools' own keys name the invocation
    assert (event["function_request_id"], event["function_memory_size"]) == (REQUEST_ID, 256)


def test_json_format_wraps_every_other_line_as_one_object() -> None:
    out = io.StringIO()
    view = LogView(out, log_format="json")
    view(line("Traceback (most recent call last):", request_id=None, stream="stderr"))
    view(line(f"START RequestId: {REQUEST_ID} Version: $LATEST"))
    view(line("[1, 2]"))  # JSON, but not an object
    assert [json.loads(text) for text in out.getvalue().splitlines()] == [
        {
            "function": "PollFunction",
            "requestId": None,
            "stream": "stderr",
            "message": "Traceback (most recent call last):",
        },
        {
            "function": "PollFunction",
            "requestId": REQUEST_ID,
            "stream": "stdout",
            "message": f"START RequestId: {REQUEST_ID} Version: $LATEST",
        },
        {"function": "PollFunction", "requestId": REQUEST_ID, "stream": "stdout", "message": "[1, 2]"},
    ]


def test_other_json_a_function_prints_is_shown_as_written_in_text() -> None:
    assert shown('{"batchItemFailures": []}') == [
        f'{CLOCK} PollFunction 3f1c2a9e {{"batchItemFailures": []}}'
    ]


def test_every_line_is_written_whole_and_flushed() -> None:
    class Recording(io.StringIO):
        def __init__(self) -> None:
            super().__init__()
            self.writes: list[str] = []
            self.flushes = 0

        def write(self, text: str, /) -> int:
            self.writes.append(text)
            return len(text)

        def flush(self) -> None:
            self.flushes += 1

    out = Recording()
    view = LogView(out)
    view(line("one"))
    view(line(f"END RequestId: {REQUEST_ID}"))  # hidden: nothing written
    view(line("two"))
    assert [re.sub(r"^\S+ ", "", text) for text in out.writes] == [
        "PollFunction 3f1c2a9e one\n",
        "PollFunction 3f1c2a9e two\n",
    ]
    assert out.flushes == 2
