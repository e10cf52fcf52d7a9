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
    cpu_s: float | None = None  # CPU seconds the system used for the measured messages
    busy: float = 0.0  # share of the CPUs other processes used just before the run

    @property
    def cpu_ms_per_message(self) -> float | None:
        if self.cpu_s is None or not self.delivered:
            return None
        return 1000 * self.cpu_s / self.delivered

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
        if len(accepted) > 1 and started:
            span = max(accepted.values()) - min(started.values())
            if span > 0:
                result.notes.append(f"intake alone: {len(accepted) / span:.0f} msg/s "
                                    "(first request sent -> last acknowledged)")
        strays = len(set(arrived) - set(accepted))
        if strays:
            # Delivered without an acknowledgement (a timed-out request that did land).
            result.notes.append(f"{strays} delivered without acknowledgement")
        return result


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _cpu_ms(value: float | None) -> str:
    # CPU per message is under a millisecond here: one decimal would hide a 10 % change.
    return "-" if value is None else f"{value:.2f}"


def median_runs(results: Iterable[RunResult]) -> list[RunResult]:
    """Per system (first-seen order), the run with the median msg/s."""
    by_system: dict[str, list[RunResult]] = {}
    for r in results:
        by_system.setdefault(r.system, []).append(r)
    out = []
    for runs in by_system.values():
        ordered = sorted(runs, key=lambda r: r.rate or 0.0)
        out.append(ordered[(len(ordered) - 1) // 2])
    return out


def table(results: Iterable[RunResult], baseline: float | None = None) -> str:
    """One row per run; the ratio is against ``baseline`` or the latest Postfix row above
    (the same round, when rounds interleave the systems)."""
    rows = [("system", "N", "msg/s", "deliv p50", "deliv p99", "intake p50", "intake p99",
             "lost", "CPU ms/msg", "vs postfix")]
    for r in results:
        if r.system.startswith("postfix") and r.rate:
            baseline = r.rate
        ratio = "-"
        if baseline and r.rate and not r.system.startswith("postfix"):
            ratio = f"{r.rate / baseline:.2f}x"
        rows.append((r.system, str(r.n), "-" if r.rate is None else f"{r.rate:.0f}",
                     _ms(percentile(r.delivery_ms, 50)), _ms(percentile(r.delivery_ms, 99)),
                     _ms(percentile(r.intake_ms, 50)), _ms(percentile(r.intake_ms, 99)),
                     str(r.lost) + (f" (+{r.n - r.submitted} refused)"
                                    if r.submitted < r.n else ""),
                     _cpu_ms(r.cpu_ms_per_message), ratio))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for k, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(row, widths, strict=True))))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines) + (
        "\n(latencies in ms; delivery = acknowledged -> arrived at the sink; CPU = the system's "
        "own processes, not the feeder or sink)")
