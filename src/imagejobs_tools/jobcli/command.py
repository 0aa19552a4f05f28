"""`imagejobs submit|status|list|watch|download`: placeholder until the CLI lands."""

from __future__ import annotations

from typing import Any


def register(subparsers: Any) -> None:
    return None
