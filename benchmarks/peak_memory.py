"""Peak resident memory of the running process, shared by the benchmarks that report it."""

from __future__ import annotations


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB.

    ``VmHWM`` where Linux has it: ``ru_maxrss`` of a child started by a large parent
    starts at the parent's peak (it survives fork and exec), so it hides the child's own.
    """
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
