"""How much system RAM this process may still use, container limits included.

/proc/meminfo's MemAvailable is the machine's figure; inside a container (Docker, Kubernetes, a systemd
slice) the cgroup's memory limit may be far lower, and exceeding it gets the process killed rather than
swapped. The figure used everywhere is the smaller of the two.
"""

from __future__ import annotations

import os

CGROUP_ROOT = "/sys/fs/cgroup"


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    if not text or text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return None


def _cgroup_dir(root: str) -> str:
    """This process's own cgroup (v2) folder under `root`, or `root` itself."""
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                hierarchy, _, path = line.strip().partition("::")
                if hierarchy == "0" and path:
                    candidate = os.path.join(root, path.lstrip("/"))
                    if os.path.isdir(candidate):
                        return candidate
    except OSError:
        pass
    return root


def cgroup_headroom(root: str = CGROUP_ROOT) -> int | None:
    """limit − usage of the tightest memory cgroup above this process (v2 or v1), or None."""
    best = None
    d = _cgroup_dir(root)
    while True:  # v2: every level may set memory.max
        limit, usage = _read_int(os.path.join(d, "memory.max")), _read_int(os.path.join(d, "memory.current"))
        if limit is not None and usage is not None:
            # page cache counts in usage but is reclaimable: add back inactive file pages when known
            inactive = _stat_value(os.path.join(d, "memory.stat"), "inactive_file") or 0
            room = max(0, limit - usage + inactive)
            best = room if best is None else min(best, room)
        if os.path.normpath(d) == os.path.normpath(root) or len(d) <= len(root):
            break
        d = os.path.dirname(d)
    v1 = os.path.join(root, "memory")
    limit, usage = _read_int(os.path.join(v1, "memory.limit_in_bytes")), _read_int(os.path.join(v1, "memory.usage_in_bytes"))
    if limit is not None and usage is not None and limit < (1 << 60):  # v1 says "no limit" with a huge number
        inactive = _stat_value(os.path.join(v1, "memory.stat"), "total_inactive_file") or 0
        room = max(0, limit - usage + inactive)
        best = room if best is None else min(best, room)
    return best


def _stat_value(path: str, key: str) -> int | None:
    try:
        with open(path) as f:
            for line in f:
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value)
    except (OSError, ValueError):
        pass
    return None


def available_ram_bytes() -> int | None:
    """RAM this process can still take: min(MemAvailable, cgroup limit − usage); None if unknown."""
    figures = [f for f in (_meminfo_available(), cgroup_headroom()) if f is not None]
    return min(figures) if figures else None
