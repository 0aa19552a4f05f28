"""How the local stack patches moto (moto_fixes, moto_speedups, server_tuning, aws_faults).

A patch applies itself and returns its undo. `apply_all` applies a registry of patches in order and
gives back one undo that reverses them all (one ExitStack; a patch that fails to apply undoes those
before it). `moto_class` finds what a patch needs in moto's private API (moto is pinned) and says
clearly which patch a moto upgrade broke.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from typing import Any

Undo = Callable[[], None]
Patch = Callable[[], Undo]


class MotoFixError(RuntimeError):
    """moto's private API no longer has what a patch changes (a moto upgrade moved it)."""


def apply_all(patches: Iterable[Patch]) -> Undo:
    """Apply each patch in order; the returned callable undoes them in reverse (call it once)."""
    with ExitStack() as applied:
        for patch in patches:
            applied.callback(patch())
        return applied.pop_all().close


def moto_class(module: str, name: str, methods: Iterable[str], needed_by: str) -> Any:
    """``module.name`` of moto, with every one of ``methods``; MotoFixError naming ``needed_by`` if not."""
    try:
        owner = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as error:
        raise MotoFixError(f"moto moved {module}.{name} ({needed_by} needs it): {error}") from error
    missing = [method for method in methods if not callable(getattr(owner, method, None))]
    if missing:
        raise MotoFixError(f"moto moved {module}.{name}.{', '.join(missing)} ({needed_by} needs it)")
    return owner
