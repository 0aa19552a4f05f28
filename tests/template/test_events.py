"""The sample events (`sam local invoke -e`) and env.json match the template, the ASL and the contract."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from imagejobs.jobs import JobValidationError, parse_job

from .conftest import REPO_ROOT, Template, architecture_section, function_environments

pytestmark = pytest.mark.template

EVENTS = REPO_ROOT / "events"
ASL_PATH = REPO_ROOT / "statemachine" / "job.asl.json"
SIMULATOR = "host.docker.internal:8787"


def _event(name: str) -> Any:
    return json.loads((EVENTS / name).read_text(encoding="utf-8"))


def _execution_input_keys() -> set[str]:
    section = architecture_section("Execution input")
    match = re.search(r"```json\n(.*?)```", section, flags=re.S)
    assert match is not None, "no JSON example under 'Execution input'"
    return set(json.loads(match.group(1)))


def _finalize_payload_keys(state_name: str) -> set[str]:
    """Keys a Record* state of the ASL sends to FinalizeFunction."""
    payload = json.loads(ASL_PATH.read_text(encoding="utf-8"))["States"][state_name]["Parameters"]["Payload"]
    return {key.removesuffix(".$") for key in payload}


@pytest.mark.parametrize("path", sorted(EVENTS.glob("*.json")), ids=lambda p: p.name)
def test_every_event_file_is_json(path: Path) -> None:
    assert isinstance(json.loads(path.read_text(encoding="utf-8")), dict)


def test_env_json_sets_each_functions_template_variables(translated_template: Template) -> None:
    # sam local passes a function only the variables its template Environment declares.
    env = _event("env.json")
    environments = function_environments(translated_template)
    assert set(env) == set(environments)
    for function, variables in environments.items():
        assert set(env[function]) == set(variables), function
        assert all(isinstance(value, str) for value in env[function].values()), function
    # The simulator runs on the host; http to it is allowed only through URL_ALLOW_HOSTS.
    for function in ("IntakeFunction", "PollFunction"):
        assert env[function]["PROVIDER_BASE_URL"] == f"http://{SIMULATOR}"
    for function in ("IntakeFunction", "StoreOutputsFunction", "S3IntakeFunction"):
        assert SIMULATOR in env[function]["URL_ALLOW_HOSTS"].split(",")


def _sqs_bodies(name: str) -> list[tuple[str, str]]:
    records = _event(name)["Records"]
    assert all(record["eventSource"] == "aws:sqs" for record in records)
    return [(record["messageId"], record["body"]) for record in records]


def test_sqs_job_event_carries_a_valid_job() -> None:
    [(message_id, body)] = _sqs_bodies("sqs_job.json")
    request = parse_job(body, message_id, allow_hosts=())
    assert request.job_id == json.loads(body)["jobId"]


def test_sqs_invalid_job_event_fails_validation_naming_fields() -> None:
    bodies = _sqs_bodies("sqs_invalid_job.json")
    assert len(bodies) >= 2
    errors: list[dict[str, list[str]]] = []
    for message_id, body in bodies:
        with pytest.raises(JobValidationError) as caught:
            parse_job(body, message_id, allow_hosts=())
        errors.append(caught.value.field_errors)
    assert {"jobId", "prompt", "outputPrefix"} <= set(errors[0])


def test_poll_event_is_an_execution_input() -> None:
    assert set(_event("poll.json")) == _execution_input_keys()


def test_store_outputs_event_is_a_completed_poll_state() -> None:
    event = _event("store_outputs.json")
    assert _execution_input_keys() | {"poll"} == set(event)
    assert event["poll"]["status"] == "COMPLETED"
    assert event["poll"]["outputUrls"]


@pytest.mark.parametrize(
    ("name", "state", "outcome"),
    [
        ("finalize_failed.json", "RecordFailed", "FAILED"),
        ("finalize_timed_out.json", "RecordTimedOut", "TIMED_OUT"),
    ],
)
def test_finalize_events_match_what_the_state_machine_sends(name: str, state: str, outcome: str) -> None:
    event = _event(name)
    assert set(event) == _finalize_payload_keys(state)
    assert event["outcome"] == outcome


def test_finalize_error_event_is_the_state_after_a_catch() -> None:
    event = _event("finalize_error.json")
    assert _execution_input_keys() <= set(event)
    assert event["outcome"] == "ERROR"
    assert set(event["error"]) == {"Error", "Cause"}
