"""Every `$.…` path of statemachine/job.asl.json is a key the code declares (imagejobs.execution_state):
a field renamed on one side only would otherwise leave a Choice reading a key nobody writes, which
no test of the happy path notices (a missing key is simply "not present")."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, get_args, get_origin, get_type_hints, is_typeddict

import pytest
from imagejobs.execution_state import ExecutionState, FinalizeInput, FinalizeResult

from tests.conftest import REPO_ROOT

DEFINITION = json.loads((REPO_ROOT / "statemachine" / "job.asl.json").read_text(encoding="utf-8"))
# What each Lambda answers (a Task's result is {"Payload": <the answer>, ...}).
ANSWERS: dict[str, Any] = {
    "${PollFunctionArn}": ExecutionState,
    "${FinalizeFunctionArn}": FinalizeResult,
    "${StoreOutputsFunctionArn}": dict,
}
# Fields of a Task's Parameters whose paths are read from the state input.
INPUT_FIELDS = ("Parameters", "InputPath", "SecondsPath", "TimestampPath", "ItemsPath")


def states(definition: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, state in definition["States"].items():
        yield name, state
        for branch in state.get("Branches", []):
            yield from states(branch)


def paths_in(value: Any) -> Iterator[str]:
    """Every reference path in a Parameters/ResultSelector-like value ("$$." context paths apart)."""
    if isinstance(value, str):
        if value.startswith("$.") or value == "$":
            yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from paths_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from paths_in(item)


def choice_variables(rules: list[dict[str, Any]]) -> Iterator[str]:
    for rule in rules:
        if "Variable" in rule:
            yield rule["Variable"]
        for key in ("And", "Or"):
            yield from choice_variables(rule.get(key, []))
        if "Not" in rule:
            yield from choice_variables([rule["Not"]])


def resolve(path: str, root: Any) -> str | None:
    """None when every segment of `path` is a declared key, else why not."""
    current = root
    for segment in [s for s in path.removeprefix("$").split(".") if s]:
        if current is dict or get_origin(current) is dict:
            return None  # an open mapping: any key
        if not is_typeddict(current):
            return f"{segment!r} is read below a {current!r}"
        hints = get_type_hints(current)
        if segment not in hints:
            return f"{segment!r} is not a key of {current.__name__}"
        current = next((a for a in get_args(hints[segment]) if is_typeddict(a)), hints[segment])
    return None


def references() -> Iterator[tuple[str, str, Any]]:
    """(state, path, the type it is read from) for every path of the definition."""
    for name, state in states(DEFINITION):
        for field in INPUT_FIELDS:
            for path in paths_in(state.get(field)):
                yield name, path, ExecutionState
        for path in choice_variables(state.get("Choices", [])):
            yield name, path, ExecutionState
        answer = ANSWERS.get(str((state.get("Parameters") or {}).get("FunctionName")))
        for field in ("ResultSelector", "OutputPath"):
            for path in paths_in(state.get(field)):
                yield name, path, ("Payload", answer)
        for path in paths_in(state.get("ResultPath")):
            yield name, path, ExecutionState
        for catcher in state.get("Catch", []):
            for path in paths_in(catcher.get("ResultPath")):
                yield name, path, ExecutionState


REFERENCES = list(references())


@pytest.mark.parametrize(("state", "path", "source"), REFERENCES, ids=[f"{s}:{p}" for s, p, _ in REFERENCES])
def test_every_path_of_the_definition_is_a_declared_key(state: str, path: str, source: Any) -> None:
    if isinstance(source, tuple):  # a Lambda Task's result: {"Payload": its answer}
        head, _, rest = path.removeprefix("$.").partition(".")
        assert head == "Payload", f"{state}: {path} reads the task result outside its Payload"
        problem = resolve(f"$.{rest}", source[1]) if rest else None
    else:
        problem = resolve(path, source)
    assert problem is None, f"{state}: {path}: {problem}"


def test_the_paths_cover_the_definition() -> None:
    # Guards the walk itself: the Choice rules, the Lambda results and the Catches were all read.
    found = {path for _, path, _ in REFERENCES}
    assert {"$.poll.status", "$.Payload.refundChecks", "$.refundError", "$.pollIntervalSeconds"} <= found


def test_the_finalize_payloads_and_the_handover_input_name_declared_keys() -> None:
    finalize_keys, execution_keys = set(get_type_hints(FinalizeInput)), set(get_type_hints(ExecutionState))
    for name, state in states(DEFINITION):
        parameters = state.get("Parameters") or {}
        payload = parameters.get("Payload")
        if parameters.get("FunctionName") == "${FinalizeFunctionArn}" and isinstance(payload, dict):
            assert {key.removesuffix(".$") for key in payload} <= finalize_keys, name
        if isinstance(parameters.get("Input"), dict):  # HandOver: the next execution's input
            assert {key.removesuffix(".$") for key in parameters["Input"]} <= execution_keys, name


def test_a_misspelt_path_is_found() -> None:
    assert resolve("$.poll.statsu", ExecutionState) == "'statsu' is not a key of PollSummary"
    assert resolve("$.refund.checks", ExecutionState) is None
