"""Counters an operator (and the integration tests) read to see what the gate is doing."""

from __future__ import annotations

from collections import Counter


class Metrics:
    def __init__(self) -> None:
        self.checks: Counter[str] = Counter()

    def render(self, cache_hits: int, uma_requests: int, jwks_fetches: int) -> str:
        """Prometheus text exposition format."""
        lines = [
            "# TYPE gate_checks_total counter",
            *(f'gate_checks_total{{outcome="{outcome}"}} {count}' for outcome, count in sorted(self.checks.items())),
            "# TYPE gate_decision_cache_hits_total counter",
            f"gate_decision_cache_hits_total {cache_hits}",
            "# TYPE gate_uma_requests_total counter",
            f"gate_uma_requests_total {uma_requests}",
            "# TYPE gate_jwks_fetches_total counter",
            f"gate_jwks_fetches_total {jwks_fetches}",
        ]
        return "\n".join(lines) + "\n"
