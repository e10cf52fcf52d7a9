"""CPU time of the systems under test, from /proc.

On a shared two-core machine wall-clock throughput moves with whatever else
runs; CPU time per message does much less, and it tells how far a system is
from what the cores allow (a single Python process cannot use more than one
core's worth of GIL time).
"""

from __future__ import annotations

import os
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may contain spaces and parentheses; fields follow the last ")".
    return text[text.rindex(")") + 2:].split()


def process_cpu(pid: int, *, reaped_children: bool = False) -> float:
    """User + system seconds of ``pid`` (all its threads), plus its waited-for children."""
    fields = _stat(pid)
    if fields is None:
        return 0.0
    # fields[0] is field 3 of proc(5): utime is field 14, stime 15, cutime 16, cstime 17.
    ticks = int(fields[11]) + int(fields[12])
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / TICKS


def tree_cpu(root: int) -> float:
    """CPU seconds of ``root``, its reaped children and its live children.

    Enough for a Postfix master: its daemons are its direct children, and the
    ones that exited were reaped by it.
    """
    total = process_cpu(root, reaped_children=True)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        if fields is not None and fields[1] == str(root):
            total += process_cpu(int(entry.name))
    return total
