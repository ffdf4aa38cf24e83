"""Resident memory of a process tree, read from /proc (the benches that watch a child process share it)."""

from __future__ import annotations

from pathlib import Path


def tree_rss(pid: int) -> int:
    """Resident bytes of `pid` and all its descendants."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += int(status.split("VmRSS:")[1].split()[0]) * 1024
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(child) for child in (task / "children").read_text().split()]
        except (OSError, IndexError):
            continue  # the process ended between two reads
    return total
