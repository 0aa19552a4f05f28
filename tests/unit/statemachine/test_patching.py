"""The local stack's patch registry: applied in order, undone in reverse, nothing left on a failure."""

from __future__ import annotations

import pytest

from imagejobs_tools.local.patching import MotoFixError, Patch, Undo, apply_all, moto_class


def _recording(name: str, log: list[str]) -> Patch:
    def patch() -> Undo:
        log.append(f"apply {name}")
        return lambda: log.append(f"undo {name}")

    return patch


def test_patches_apply_in_order_and_one_undo_reverses_them() -> None:
    log: list[str] = []
    undo = apply_all([_recording("a", log), _recording("b", log), _recording("c", log)])
    assert log == ["apply a", "apply b", "apply c"]
    undo()
    assert log[3:] == ["undo c", "undo b", "undo a"]


def test_a_patch_that_fails_to_apply_undoes_those_before_it() -> None:
    log: list[str] = []

    def broken() -> Undo:
        raise MotoFixError("moto moved it")

    with pytest.raises(MotoFixError, match="moto moved it"):
        apply_all([_recording("a", log), _recording("b", log), broken, _recording("never", log)])
    assert log == ["apply a", "apply b", "undo b", "undo a"]


def test_moto_class_names_the_patch_and_what_moved() -> None:
    from moto.sqs.models import SQSBackend

    assert moto_class("moto.sqs.models", "SQSBackend", ("get_queue",), "a fix") is SQSBackend
    with pytest.raises(
        MotoFixError, match=r"SQSBackend\.gone_in_a_later_moto \(the retention fix needs it\)"
    ):
        moto_class(
            "moto.sqs.models", "SQSBackend", ("get_queue", "gone_in_a_later_moto"), "the retention fix"
        )
    with pytest.raises(MotoFixError, match=r"moto moved moto\.sqs\.gone\.Queue \(a fix needs it\)"):
        moto_class("moto.sqs.gone", "Queue", (), "a fix")
