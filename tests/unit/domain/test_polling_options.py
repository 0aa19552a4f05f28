"""FirstPollAfter and PollsPerInvocation (docs/polling.md): settings, the first-poll policy, the
multi-poll step, and the generation times the policy learns from."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from imagejobs.catalog import cold_start_first_poll_seconds
from imagejobs.config import ConfigError, ExecutionSettings, IntakeSettings, PollSettings
from imagejobs.first_poll import (
    AUTO_CAP_SECONDS,
    AUTO_COLD_REFRESH_SECONDS,
    AUTO_MIN_SAMPLES,
    AUTO_RECENT_JOBS,
    AUTO_REFRESH_SECONDS,
    FirstPollPolicy,
    lower_quantile,
)
from imagejobs.intake import execution_input
from imagejobs.provider import ProviderServerError, TaskNotFound, TaskSnapshot, TaskStatus
from imagejobs.store import JobStore
from imagejobs.workflow import POLL_RESERVE_SECONDS, PollBudget, ProviderTransientError, poll_step
from moto import mock_aws

from tests.conftest import SAMPLE_ENV
from tests.unit.domain.fakes import Clock, create_jobs_table, snapshot
from tests.unit.domain.test_workflow import STATE, T0

DONE = "2026-01-01T00:00:31.500Z"  # 31.5 s after the fake snapshots' createdAt
PENDING = snapshot()
COMPLETED = snapshot(
    status=TaskStatus.COMPLETED, output_urls=("https://cdn.example/a.png",), completed_at=DONE
)


# ----------------------------------------------------------------------------- settings


@pytest.mark.parametrize(("raw", "expected"), [("", 0), ("0", 0), ("25", 25), ("240", 240), ("auto", "auto")])
def test_first_poll_after_accepts_auto_or_whole_seconds_up_to_240(raw: str, expected: int | str) -> None:
    settings = IntakeSettings.from_env({**SAMPLE_ENV, "FIRST_POLL_AFTER": raw})
    assert settings.first_poll_after == expected


@pytest.mark.parametrize("raw", ["241", "-1", "2.5", "soon", "AUTO"])
def test_a_bad_first_poll_after_fails_the_init_naming_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError) as caught:
        IntakeSettings.from_env({**SAMPLE_ENV, "FIRST_POLL_AFTER": raw})
    assert caught.value.variable == "FIRST_POLL_AFTER"
    assert "auto or whole seconds from 0 to 240" in str(caught.value)


@pytest.mark.parametrize(("raw", "expected"), [("", 1), ("1", 1), ("30", 30)])
def test_polls_per_invocation_defaults_to_one(raw: str, expected: int) -> None:
    assert PollSettings.from_env({**SAMPLE_ENV, "POLLS_PER_INVOCATION": raw}).polls_per_invocation == expected


@pytest.mark.parametrize("raw", ["0", "31", "two"])
def test_a_bad_polls_per_invocation_fails_the_init_naming_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError) as caught:
        PollSettings.from_env({**SAMPLE_ENV, "POLLS_PER_INVOCATION": raw})
    assert caught.value.variable == "POLLS_PER_INVOCATION"


# ----------------------------------------------------------------------------- the first-poll policy


@dataclass
class RecordedTimes:
    """GenerationTimes double: per-model samples, and every query made."""

    samples: dict[str, list[float]] = field(default_factory=dict)
    queries: list[tuple[str, int]] = field(default_factory=list)
    error: Exception | None = None

    def recent_generation_seconds(self, model: str, limit: int) -> list[float]:
        self.queries.append((model, limit))
        if self.error is not None:
            raise self.error
        return list(self.samples.get(model, []))


def test_lower_quantile_is_the_nearest_rank() -> None:
    samples = [float(s) for s in range(1, 101)]
    assert lower_quantile(samples, 0.10) == 10.0
    assert lower_quantile([5.0, 1.0, 3.0], 0.10) == 1.0


def test_zero_waits_one_poll_interval_and_seconds_wait_that_long() -> None:
    assert FirstPollPolicy(0, 2).seconds("gpt-image-2", "image") == 2
    assert FirstPollPolicy(25, 2).seconds("gpt-image-2", "image") == 25


def test_auto_uses_the_10th_percentile_of_the_models_recent_generation_times() -> None:
    times = RecordedTimes({"gpt-image-2": [20.0 + i for i in range(40)], "veo3": [90.0] * 30})
    policy = FirstPollPolicy("auto", 2, times)
    assert policy.seconds("gpt-image-2", "image") == 23  # 4th of 40 sorted samples, 23.0
    assert policy.seconds("veo3", "video") == 90
    assert times.queries == [("gpt-image-2", AUTO_RECENT_JOBS), ("veo3", AUTO_RECENT_JOBS)]


def test_auto_with_too_few_jobs_uses_the_catalogs_cold_start_value() -> None:
    times = RecordedTimes({"gpt-image-2": [50.0] * (AUTO_MIN_SAMPLES - 1)})
    policy = FirstPollPolicy("auto", 2, times)
    assert (
        policy.seconds("gpt-image-2", "image") == cold_start_first_poll_seconds("gpt-image-2", "image") == 10
    )
    assert policy.seconds("veo3", "video") == cold_start_first_poll_seconds("veo3", "video") == 30
    # A model the catalog does not know: its kind's default.
    assert policy.seconds("brand-new-model", "video") == 30


def test_auto_is_never_sooner_than_one_interval_nor_later_than_the_cap() -> None:
    times = RecordedTimes({"fast": [0.4] * 50, "slow": [900.0] * 50})
    policy = FirstPollPolicy("auto", 3, times)
    assert policy.seconds("fast", "image") == 3
    assert policy.seconds("slow", "video") == AUTO_CAP_SECONDS


def test_on_express_the_first_poll_comes_by_the_hand_over() -> None:
    times = RecordedTimes({"veo3": [200.0] * 50})
    assert FirstPollPolicy("auto", 2, times, handover_after_seconds=90).seconds("veo3", "video") == 90
    env = {**SAMPLE_ENV, "HANDOVER_AFTER_SECONDS": "120"}
    assert IntakeSettings.from_env({**env, "FIRST_POLL_AFTER": "120"}).first_poll_after == 120
    with pytest.raises(ConfigError) as caught:
        IntakeSettings.from_env({**env, "FIRST_POLL_AFTER": "121"})
    assert caught.value.variable == "FIRST_POLL_AFTER" and "HANDOVER_AFTER_SECONDS" in str(caught.value)


def test_auto_reuses_an_estimate_for_a_while_then_reads_again() -> None:
    clock = Clock(0.0)
    times = RecordedTimes({"gpt-image-2": [30.0] * 50})
    policy = FirstPollPolicy("auto", 2, times, clock=clock)
    assert policy.seconds("gpt-image-2", "image") == 30
    times.samples["gpt-image-2"] = [40.0] * 50
    clock.advance(AUTO_REFRESH_SECONDS - 1)
    assert policy.seconds("gpt-image-2", "image") == 30
    clock.advance(2)
    assert policy.seconds("gpt-image-2", "image") == 40
    assert len(times.queries) == 2


def test_a_cold_start_estimate_is_kept_only_briefly_while_samples_come_in() -> None:
    clock = Clock(0.0)
    times = RecordedTimes({"gpt-image-2": [30.0] * 5})
    policy = FirstPollPolicy("auto", 2, times, clock=clock)
    assert policy.seconds("gpt-image-2", "image") == 10
    times.samples["gpt-image-2"] = [30.0] * AUTO_MIN_SAMPLES
    clock.advance(AUTO_COLD_REFRESH_SECONDS - 1)
    assert policy.seconds("gpt-image-2", "image") == 10
    clock.advance(2)
    assert policy.seconds("gpt-image-2", "image") == 30


def test_auto_falls_back_to_the_catalog_when_the_records_cannot_be_read() -> None:
    times = RecordedTimes(error=RuntimeError("throttled"))
    assert FirstPollPolicy("auto", 2, times).seconds("gpt-image-2", "image") == 10


# ----------------------------------------------------------------------------- the execution input


def execution_settings(**env: str) -> ExecutionSettings:
    return IntakeSettings.from_env({**SAMPLE_ENV, **env})


def test_a_longer_first_wait_goes_into_the_input_with_the_steady_interval_beside_it() -> None:
    payload = execution_input("job-1", "tsk_1", "image", execution_settings(), T0, first_poll_seconds=25)
    assert payload["pollIntervalSeconds"] == 25
    assert payload["steadyPollIntervalSeconds"] == 2


@pytest.mark.parametrize("first", [None, 2])
def test_the_default_input_is_unchanged(first: int | None) -> None:
    payload = execution_input("job-1", "tsk_1", "image", execution_settings(), T0, first_poll_seconds=first)
    assert payload["pollIntervalSeconds"] == 2
    assert "steadyPollIntervalSeconds" not in payload


# ----------------------------------------------------------------------------- the poll step


@dataclass
class Budget:
    """A PollBudget's parts, recording each sleep and counting down the function's time."""

    remaining: float = 180.0
    slept: list[float] = field(default_factory=list)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.remaining -= seconds

    def of(self, polls: int) -> PollBudget:
        return PollBudget(polls=polls, remaining_seconds=lambda: self.remaining, sleep=self.sleep)


def scripted(*snapshots: TaskSnapshot | Exception) -> Any:
    class Scripted:
        calls = 0

        def get_task(self, task_id: str) -> TaskSnapshot:
            item = snapshots[min(self.calls, len(snapshots) - 1)]
            self.calls += 1
            if isinstance(item, Exception):
                raise item
            return item

    return Scripted()


def test_one_call_polls_every_interval_and_returns_at_the_first_terminal_snapshot() -> None:
    budget = Budget()
    provider = scripted(PENDING, PENDING, COMPLETED, PENDING)
    out = poll_step(STATE, provider, now=lambda: T0 + 30, budget=budget.of(10))
    assert provider.calls == 3
    assert budget.slept == [2, 2]
    assert out["polls"] == 3
    assert out["poll"]["status"] == "COMPLETED"
    assert out["poll"]["providerSeconds"] == 31.5


def test_one_call_stops_after_its_polls_with_the_last_pending_snapshot() -> None:
    budget = Budget()
    provider = scripted(PENDING)
    out = poll_step({**STATE, "polls": 4}, provider, now=lambda: T0 + 30, budget=budget.of(5))
    assert provider.calls == 5 and budget.slept == [2, 2, 2, 2]
    assert out["polls"] == 9
    assert out["poll"]["status"] == "PENDING"


def test_the_default_budget_polls_once_and_never_sleeps() -> None:
    budget = Budget()
    provider = scripted(PENDING)
    assert poll_step(STATE, provider, now=lambda: T0, budget=budget.of(1))["polls"] == 1
    assert provider.calls == 1 and budget.slept == []


def test_a_further_poll_starts_only_with_a_polls_worst_case_left() -> None:
    budget = Budget(remaining=2 + POLL_RESERVE_SECONDS + 3)
    provider = scripted(PENDING)
    poll_step(STATE, provider, now=lambda: T0, budget=budget.of(30))
    assert provider.calls == 3  # 105 s left, then 103, then 101 < 102: no third wait


def test_the_deadline_ends_a_call_at_once() -> None:
    budget = Budget()
    out = poll_step(STATE, scripted(PENDING), now=lambda: T0 + 601, budget=budget.of(10))
    assert out["poll"]["deadlineExceeded"] is True and out["polls"] == 1 and budget.slept == []


def test_a_hand_over_ends_a_call_at_once() -> None:
    state = {**STATE, "handoverAfterSeconds": 240, "segmentStartedAt": T0}
    clock = iter([T0 + 236, T0 + 238, T0 + 240, T0 + 242])
    out = poll_step(state, scripted(PENDING), now=lambda: next(clock), budget=Budget().of(10))
    assert out["polls"] == 3
    assert out["poll"]["handoverDue"] is True and out["poll"]["nextExecutionName"] == "job-1-1"


def test_a_transient_error_after_a_poll_ends_the_call_with_that_poll() -> None:
    provider = scripted(PENDING, ProviderServerError(502))
    out = poll_step(STATE, provider, now=lambda: T0, budget=Budget().of(10))
    assert out["polls"] == 1 and out["poll"]["status"] == "PENDING"


def test_a_transient_error_on_the_first_poll_is_raised_for_the_state_machines_retry() -> None:
    provider = scripted(ProviderServerError(502))
    with pytest.raises(ProviderTransientError):
        poll_step(STATE, provider, now=lambda: T0, budget=Budget().of(10))


def test_a_permanent_error_on_a_later_poll_is_raised() -> None:
    provider = scripted(PENDING, TaskNotFound("tsk_1"))
    with pytest.raises(TaskNotFound):
        poll_step(STATE, provider, now=lambda: T0, budget=Budget().of(10))


def test_the_first_poll_restores_the_steady_interval_after_a_longer_first_wait() -> None:
    state = {**STATE, "pollIntervalSeconds": 25, "steadyPollIntervalSeconds": 2}
    budget = Budget()
    out = poll_step(state, scripted(PENDING), now=lambda: T0 + 25, budget=budget.of(3))
    assert out["pollIntervalSeconds"] == 2 and "steadyPollIntervalSeconds" not in out
    assert budget.slept == [2, 2]


# ----------------------------------------------------------------------------- what auto learns from


@pytest.fixture
def store() -> Iterator[JobStore]:
    with mock_aws():
        yield JobStore(create_jobs_table(boto3.resource("dynamodb", region_name="us-east-1")))


def complete(store: JobStore, job_id: str, model: str, provider_seconds: float | None, at: float) -> None:
    store.create_received(job_id, {"jobId": job_id, "kind": "image", "model": model, "prompt": "p"}, now=at)
    store.claim_for_submit(job_id, 60, now=at)
    store.mark_submitted(job_id, "tsk_" + job_id, 3, "arn:exec", now=at)
    latency = {} if provider_seconds is None else {"providerSeconds": provider_seconds}
    store.mark_completed(job_id, [], latency=latency, now=at + 1)


def test_recent_generation_seconds_reads_that_models_newest_completed_jobs(store: JobStore) -> None:
    for index in range(6):
        complete(store, f"a{index}", "gpt-image-2", 30.0 + index, T0 + index)
    complete(store, "b0", "nano-banana-2", 12.0, T0 + 10)
    complete(store, "c0", "gpt-image-2", None, T0 + 11)  # no provider time: not a sample
    assert store.recent_generation_seconds("gpt-image-2", 200) == [35.0, 34.0, 33.0, 32.0, 31.0, 30.0]
    assert store.recent_generation_seconds("nano-banana-2", 200) == [12.0]
    # The limit bounds the records read (c0, b0, a5), before the model filter: a bounded query.
    assert store.recent_generation_seconds("gpt-image-2", 3) == [35.0]


class NoCopy:
    """OutputCopier double: the copy itself is tested in test_copier.py."""

    def copy_outputs(self, job_id: str, prefix: str, urls: list[str], **kwargs: Any) -> list[Any]:
        return []


def test_store_outputs_keeps_the_providers_generation_time_on_the_record(store: JobStore) -> None:
    from imagejobs.workflow import store_outputs_step

    store.create_received(
        "job-1", {"jobId": "job-1", "kind": "image", "model": "gpt-image-2", "prompt": "p"}, now=T0
    )
    store.claim_for_submit("job-1", 60, now=T0)
    store.mark_submitted("job-1", "tsk_1", 3, "arn:exec", now=T0)
    poll = {"status": "COMPLETED", "outputUrls": ["https://cdn.example/a.png"], "providerSeconds": 31.5}
    store_outputs_step({**STATE, "polls": 3, "poll": poll}, store, NoCopy(), default_prefix="o/", now=T0 + 33)  # type: ignore[arg-type]
    record = store.get("job-1")
    assert record is not None and record["status"] == "COMPLETED"
    assert record["latency"]["providerSeconds"] == 31.5
    assert store.recent_generation_seconds("gpt-image-2", 10) == [31.5]
