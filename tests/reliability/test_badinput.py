"""Suite 5 at full corpus size (it is fast): every bad message REJECTED with field and reason, 0 credits."""

from __future__ import annotations

import json

import pytest

from imagejobs_tools.reliability.badinput import DEFAULT_CORPUS, build_body, load_corpus, run_badinput
from imagejobs_tools.reliability.outputs import run_outputs


def test_corpus_has_at_least_60_cases_covering_every_family() -> None:
    cases = load_corpus(DEFAULT_CORPUS)
    assert len(cases) >= 60
    assert {case.family for case in cases} == {"body", "fields", "urls", "prefixes"}
    for case in cases:  # every fixture builds a body and names the field it must be refused on
        assert build_body(case) is not None
        assert case.expect_field


def test_every_bad_message_is_rejected_with_field_and_reason_and_costs_nothing() -> None:
    report = run_badinput()
    assert report.notes == []  # one note per failing case: shows which
    assert report.checks == {name: True for name in report.checks}, report.render()
    assert report.terminal == {"REJECTED": report.jobs_sent}
    assert report.provider_tasks == 0
    assert report.credits_spent == 0


def test_hostile_outputs_are_refused_without_leftovers_or_memory_blowup() -> None:
    report = run_outputs()
    assert report.ok, report.render()
    assert json.dumps(report.to_json())  # printable as JSON for the benchmark


@pytest.mark.parametrize("name", ["nan-literal", "lone-surrogate-prompt", "deep-nesting-100000"])
def test_named_hostile_cases_are_in_the_corpus(name: str) -> None:
    assert name in {case.name for case in load_corpus(DEFAULT_CORPUS)}
