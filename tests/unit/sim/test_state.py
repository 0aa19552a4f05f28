"""Ledger, task lifecycle, snapshots and config parsing, without a server."""

from __future__ import annotations

import re
from typing import Any

import pytest

from imagejobs_tools.sim.catalog import GenerationRequest, validate_submission
from imagejobs_tools.sim.config import ConfigError, FaultConfig, SimulatorConfig, parse_latency
from imagejobs_tools.sim.state import (
    InputFetch,
    InsufficientCredits,
    SimulatorState,
    is_task_id,
    mask_key,
    new_task_id,
    render_snapshot,
)

KEY = "sk_test_unit_key"
OTHER = "sk_test_other_key"


def request(**fields: Any) -> GenerationRequest:
    parsed, errors = validate_submission("image", {"prompt": "p", **fields})
    assert parsed is not None, errors
    return parsed


def state(**config: Any) -> SimulatorState:
    settings: dict[str, Any] = {"api_keys": {KEY: 10, OTHER: 10}, "latency": (0.0, 0.0), "seed": 3}
    settings.update(config)
    return SimulatorState(SimulatorConfig(**settings).validated())


def test_task_ids_are_tsk_plus_26_crockford_chars_and_unique() -> None:
    ids = {new_task_id() for _ in range(500)}

    assert len(ids) == 500
    assert all(re.fullmatch(r"tsk_[0-9A-HJKMNP-TV-Z]{26}", task_id) for task_id in ids)
    assert all(is_task_id(task_id) for task_id in ids)
    assert not is_task_id("tsk_" + "I" * 26)
    assert not is_task_id("tsk_short")


def test_mask_key_hides_the_key_but_tells_keys_apart() -> None:
    assert KEY not in mask_key(KEY)
    assert mask_key(KEY) != mask_key(OTHER)
    assert mask_key("k") != "k"


def test_pre_debit_then_refund_on_failure() -> None:
    sim = state()
    ok = sim.create_task(KEY, request())
    failing = sim.create_task(KEY, request(providerInput={"simFailCode": "STORAGE_ERROR"}))

    assert sim.accounts[KEY].balance == 4  # both pre-debited
    assert sim.find_task(ok.task_id, KEY) is ok and ok.status == 1
    assert sim.find_task(failing.task_id, KEY) is failing and failing.status == 2
    assert (failing.error_code, failing.refunded) == ("STORAGE_ERROR", True)
    stats = sim.stats()["keys"][mask_key(KEY)]
    assert (stats["balance"], stats["spent"], stats["refunded"], stats["net"]) == (7, 6, 3, 3)


def test_a_refund_can_lag_the_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    import imagejobs_tools.sim.state as sim_state

    clock = [1000.0]
    monkeypatch.setattr(sim_state.time, "monotonic", lambda: clock[0])
    sim = state()
    lagging = sim.create_task(
        KEY, request(providerInput={"simFailCode": "X_FAILED", "simRefundDelaySeconds": 5})
    )

    assert sim.find_task(lagging.task_id, KEY) is lagging
    assert (lagging.status, lagging.refunded, sim.accounts[KEY].balance) == (2, False, 7)
    assert render_snapshot(lagging, "quickstart", "http://sim")["creditRefunded"] is False
    clock[0] += 5
    sim.find_task(lagging.task_id, KEY)
    assert (lagging.refunded, sim.accounts[KEY].balance) == (True, 10)
    assert sim.stats()["keys"][mask_key(KEY)]["refunded"] == 3
    _, errors = validate_submission("image", {"prompt": "p", "providerInput": {"simRefundDelaySeconds": -1}})
    assert "simRefundDelaySeconds must be a number between 0 and 3600" in str(errors)


def test_insufficient_credits_charges_nothing() -> None:
    sim = state()
    sim.create_task(KEY, request(model="nano-banana-2", resolution="4K"))  # 8 of 10

    with pytest.raises(InsufficientCredits) as short:
        sim.create_task(KEY, request())

    assert short.value.required == 3
    assert sim.accounts[KEY].balance == 2
    assert len(sim.tasks) == 1


def test_tasks_are_scoped_to_their_key() -> None:
    sim = state()
    task = sim.create_task(KEY, request())

    assert sim.find_task(task.task_id, OTHER) is None
    assert sim.find_task(task.task_id, KEY) is task
    assert sim.find_task(task.task_id, None) is task  # output files are not key-scoped


def test_pending_until_inputs_are_fetched_then_input_failure_wins() -> None:
    sim = state()
    task = sim.create_task(KEY, request(inputImageUrls=["http://127.0.0.1:9/a.png"]))

    assert sim.find_task(task.task_id, KEY).status == 0  # type: ignore[union-attr]
    sim.record_fetches(task, [InputFetch(url="u", ok=False, http_status=200, error="not an image",
                                         failure_code="INPUT_NOT_IMAGE")])  # fmt: skip

    assert sim.find_task(task.task_id, KEY).status == 2  # type: ignore[union-attr]
    assert task.error_code == "INPUT_NOT_IMAGE"
    assert task.error_message == "Input image 1: not an image"
    assert sim.accounts[KEY].balance == 10


def test_failure_rate_cycles_configured_codes() -> None:
    sim = state(
        api_keys={KEY: 100}, faults=FaultConfig(task_failure_rate=1.0, failure_codes=("A_ONE", "B_TWO"))
    )

    codes = [sim.find_task(sim.create_task(KEY, request()).task_id, KEY).error_code for _ in range(3)]  # type: ignore[union-attr]

    assert codes == ["A_ONE", "B_TWO", "A_ONE"]
    assert sim.stats()["faultsInjected"] == {"task_failure_rate": 3}


def test_quickstart_snapshot_omits_outputs_while_pending_and_reference_has_every_key() -> None:
    sim = state(latency=(600.0, 600.0))
    task = sim.create_task(KEY, request())

    quick = render_snapshot(task, "quickstart", "http://sim")
    reference = render_snapshot(task, "reference", "http://sim")

    assert list(quick) == [
        "id",
        "type",
        "status",
        "createdAt",
        "completedAt",
        "creditsUsed",
        "creditRefunded",
    ]
    assert reference["imageUrls"] == [] and reference["videoUrl"] is None
    assert len(reference) == 13


def test_set_credits_records_the_adjustment_and_creates_unknown_keys() -> None:
    sim = state()

    sim.set_credits(KEY, 50)
    created = sim.set_credits("sk_test_new", 7)

    assert sim.stats()["keys"][mask_key(KEY)]["adjustments"] == 40
    assert created["balance"] == 7


def test_reset_restores_everything() -> None:
    sim = state()
    sim.create_task(KEY, request())
    sim.set_faults({"poll_500_rate": 0.5})
    sim.configure("reference", None, None)

    sim.reset()

    assert sim.tasks == {}
    assert sim.accounts[KEY].balance == 10
    assert sim.faults == FaultConfig()
    assert sim.shape == "quickstart"


@pytest.mark.parametrize(
    ("text", "expected"), [("0.5:2", (0.5, 2.0)), ("3", (3.0, 3.0)), ("0:0", (0.0, 0.0))]
)
def test_parse_latency(text: str, expected: tuple[float, float]) -> None:
    assert parse_latency(text) == expected


@pytest.mark.parametrize("text", ["2:1", "a:b", "-1:2", "1:2:3"])
def test_parse_latency_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="latency"):
        parse_latency(text)


def test_fault_updates_are_validated() -> None:
    with pytest.raises(ConfigError, match="rate_429"):
        FaultConfig().updated({"rate_429": -0.1})
    with pytest.raises(ConfigError, match="unknown fault setting"):
        FaultConfig().updated({"nope": 1})
    assert FaultConfig().updated({"failure_codes": ["X"]}).failure_codes == ("X",)


def test_config_accepts_a_list_of_keys_with_shared_credits() -> None:
    config = SimulatorConfig(api_keys=["a_key_1", "a_key_2"], credits=5)

    assert config.initial_credits() == {"a_key_1": 5, "a_key_2": 5}
    assert SimulatorConfig().initial_credits() == {"sk_test_local": 1000}
    with pytest.raises(ConfigError, match="shape"):
        SimulatorConfig(shape="other").validated()  # type: ignore[arg-type]


def test_failure_codes_must_be_a_list_not_a_string() -> None:
    with pytest.raises(ConfigError, match="failure_codes"):
        FaultConfig().updated({"failure_codes": "EMPTY_RESULT"})
