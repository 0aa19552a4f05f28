"""The local stack: the whole pipeline on one machine (see docs/local-stack.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from imagejobs_tools.local.stack import LocalStack, LocalStackConfig, LocalStackError, StackInfo

__all__ = ["LocalStack", "LocalStackConfig", "LocalStackError", "StackInfo"]


def __getattr__(name: str) -> Any:
    # Imported on first use: the stack pulls in moto and boto3 (~0.3 s), which `imagejobs sim`
    # and `imagejobs --help` (they import this package's command module) never need.
    if name in __all__:
        from imagejobs_tools.local import stack

        return getattr(stack, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
