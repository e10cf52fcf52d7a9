"""Figures of one benchmark run and the side-by-side table."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (no interpolation: p99 of 2000 is the 1980th value)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class RunResult:
    system: str
    n: int
    submitted: int = 0  # acknowledged by the system under test
    delivered: int = 0  # distinct ids that reached the sink
    duplicates: int = 0
    rate: float | None = None  # messages/s, first accepted -> last delivered
    delivery_ms: list[float] = field(default_factory=list)  # accepted -> at the sink
    intake_ms: list[float] = field(default_factory=list)  # request sent -> acknowledged
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        """Acknowledged but never delivered: what a durable system must never do."""
        return self.submitted - self.delivered

    @classmethod
    def measure(cls, system: str, n: int, started: Mapping[str, float],
                accepted: Mapping[str, float], arrived: Mapping[str, float],
                duplicates: int = 0) -> RunResult:
        result = cls(system, n, submitted=len(accepted), duplicates=duplicates)
        delivered = [key for key in accepted if key in arrived]
        result.delivered = len(delivered)
        if delivered:
            begin = min(accepted.values())
            end = max(arrived[key] for key in delivered)
            if end > begin:
                result.rate = len(delivered) / (end - begin)
        result.delivery_ms = [(arrived[k] - accepted[k]) * 1000 for k in delivered]
        result.intake_ms = [(accepted[k] - started[k]) * 1000 for k in accepted if k in started]
        strays = len(set(arrived) - set(accepted))
        if strays:
            # Delivered without an acknowledgement (a timed-out request that did land).
            result.notes.append(f"{strays} delivered without acknowledgement")
        return result


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def table(results: Iterable[RunResult]) -> str:
    rows = [("system", "N", "msg/s", "deliv p50", "deliv p99", "intake p50", "intake p99",
             "lost", "vs postfix")]
    results = list(results)
    baseline = next((r.rate for r in results if r.system.startswith("postfix") and r.rate), None)
    for r in results:
        ratio = "-"
        if baseline and r.rate and not r.system.startswith("postfix"):
            ratio = f"{r.rate / baseline:.2f}x"
        rows.append((r.system, str(r.n), "-" if r.rate is None else f"{r.rate:.0f}",
                     _ms(percentile(r.delivery_ms, 50)), _ms(percentile(r.delivery_ms, 99)),
                     _ms(percentile(r.intake_ms, 50)), _ms(percentile(r.intake_ms, 99)),
                     str(r.lost) + (f" (+{r.n - r.submitted} refused)"
                                    if r.submitted < r.n else ""),
                     ratio))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for k, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(row, widths, strict=True))))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n(latencies in ms; delivery = acknowledged -> arrived at the sink)"
