"""The figures every suite reports (issue 6): one `SuiteReport`, printed as a table or JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class SuiteReport:
    suite: str
    jobs_sent: int = 0
    terminal: dict[str, int] = field(default_factory=dict)  # status -> count
    dlq: int = 0
    lost: int = 0  # jobs with no terminal record and not in the DLQ
    provider_tasks: int = 0
    credits_spent: int = 0
    credits_refunded: int = 0
    duplicates: int = 0  # provider tasks beyond one per job
    wall_seconds: float = 0.0
    checks: dict[str, bool] = field(default_factory=dict)  # invariant -> held
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(self.checks.values())

    def check(self, name: str, held: bool) -> bool:
        self.checks[name] = bool(held)
        return bool(held)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        return data

    def render(self) -> str:
        terminal = ", ".join(f"{k} {v}" for k, v in sorted(self.terminal.items())) or "-"
        lines = [
            f"suite {self.suite}: {'OK' if self.ok else 'FAILED'}",
            f"  jobs sent          {self.jobs_sent}",
            f"  terminal states    {terminal}",
            f"  DLQ                {self.dlq}",
            f"  lost               {self.lost}",
            f"  provider tasks     {self.provider_tasks}",
            f"  credits spent      {self.credits_spent}",
            f"  credits refunded   {self.credits_refunded}",
            f"  duplicates         {self.duplicates}",
            f"  wall time          {self.wall_seconds:.1f} s",
        ]
        for name, value in self.extra.items():
            lines.append(f"  {name:<18} {json.dumps(value) if not isinstance(value, str) else value}")
        for name, held in self.checks.items():
            lines.append(f"  [{'x' if held else ' '}] {name}")
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)
