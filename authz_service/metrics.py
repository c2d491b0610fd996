"""Counters an operator (and the integration tests) read to see what the gate is doing."""

from __future__ import annotations

from collections import Counter


class Metrics:
    def __init__(self) -> None:
        self.checks: Counter[str] = Counter()

    def render(self, counters: dict[str, int]) -> str:
        """Prometheus text exposition format: the check outcomes plus the given counters."""
        lines = ["# TYPE gate_checks_total counter"]
        lines += [f'gate_checks_total{{outcome="{outcome}"}} {count}' for outcome, count in sorted(self.checks.items())]
        for name, value in counters.items():
            lines += [f"# TYPE {name} counter", f"{name} {value}"]
        return "\n".join(lines) + "\n"
