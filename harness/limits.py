"""The limits of a sandboxed worker, judged by CPU time so verdicts do not change with load.

``Limits`` says what a worker may use; ``Watch`` enforces the time limits of one request while
the parent waits for the reply: the CPU budget (``session_cpu_seconds`` sums every process in
the worker's session from /proc), no progress for ``Limits.stall()`` wall seconds, and the
absolute wall ceiling ``Limits.wall()``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

@dataclass
class Limits:
    """What a worker may use. ``cpu_s`` governs: "too slow" is CPU time the worker (and every
    process it started) consumed since ``begin_budget``, so a verdict does not change with
    machine load. Wall-clock limits only catch a worker that makes no progress (``stall_s``
    without consuming CPU: sleeping, blocked, deadlocked) or, as a last resort, one whose CPU
    use is hidden from the accounting (``wall_s``, by default ``WALL_FACTOR`` × ``cpu_s``)."""

    cpu_s: float = 120.0            # CPU seconds per use (one verify or measure): what --timeout sets
    stall_s: float | None = None    # wall seconds without CPU progress; default min(max(cpu_s, 5), 60)
    wall_s: float | None = None     # absolute per-use ceiling; default WALL_FACTOR * cpu_s + 60
    rlimit_cpu_s: int = 4 * 3600    # the kernel's per-process backstop (RLIMIT_CPU, SIGXCPU)
    memory_bytes: int | None = 16 << 30   # RLIMIT_AS; None on CUDA machines (the driver reserves huge ranges)
    file_bytes: int = 256 << 20
    open_files: int = 1024
    processes: int = 1024           # RLIMIT_NPROC for uid 65534 (threads count too)
    tmpfs_size: str = "1g"

    def stall(self) -> float:
        return self.stall_s if self.stall_s is not None else min(max(self.cpu_s, 5.0), 60.0)

    def wall(self) -> float:
        return self.wall_s if self.wall_s is not None else WALL_FACTOR * self.cpu_s + 60.0


WALL_FACTOR = 10          # at load L on C cores a worker still gets ~C/(L+1) of a core: 10× is load ~20 on 2
STALL_CPU_S = 0.02        # less CPU than this over a stall window is "no progress"
CHECK_EVERY_S = 0.2       # how often a waiting parent reads the worker's CPU time (a /proc scan, ~1 ms)
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (field 3 onwards), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()


def session_cpu_seconds(sid: int) -> float:
    """CPU seconds (user + system, with reaped children's) of every process in session ``sid``.

    A worker starts a new session, and everything it forks stays in it unless it calls
    ``setsid`` (which hides that process's CPU from here; ``Limits.wall_s`` and RLIMIT_CPU
    still bound it)."""
    total = 0
    try:
        entries = os.listdir("/proc")
    except OSError:
        return 0.0
    for entry in entries:
        if not entry.isdigit():
            continue
        f = _stat_fields(entry)
        if f is None or len(f) < 15 or f[3] != str(sid):
            continue
        try:
            total += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
        except ValueError:
            continue
    return total / _CLK_TCK


class Watch:
    """The limits of one request: CPU budget, progress, and the wall ceiling."""

    def __init__(self, worker, extra_wall_s: float = 0.0):
        self.worker, self.extra = worker, extra_wall_s
        now = time.monotonic()
        worker._deadline += extra_wall_s        # the idle time is granted to the whole use
        self.deadline = worker._deadline
        self.progress_cpu: float | None = None      # read at the first check: a quick reply costs no scan
        self.progress_t = now
        self.stall_until = now + worker.limits.stall() + extra_wall_s
        self.next_check = now + CHECK_EVERY_S / 2

    def check(self) -> None:
        now = time.monotonic()
        if now < self.next_check:
            return
        self.next_check = now + CHECK_EVERY_S
        w, lim = self.worker, self.worker.limits
        cpu = w.cpu_seconds()
        used = max(0.0, cpu - w._budget_start_cpu)
        if self.progress_cpu is None:
            self.progress_cpu = cpu
        if used > lim.cpu_s:
            self._stop("cpu", used, f"the worker used {used:.1f} CPU-seconds, over the {lim.cpu_s:g} s budget "
                                    "(--timeout counts CPU time, not wall time)")
        if cpu - self.progress_cpu >= STALL_CPU_S:
            self.progress_cpu, self.progress_t = cpu, now
            self.stall_until = max(self.stall_until, now + lim.stall())
        elif now > self.stall_until:
            self._stop("stall", used, f"the worker made no progress for {now - self.progress_t:.0f} s of wall time "
                                      "(sleeping, blocked or deadlocked; it used no CPU)")
        if now > self.deadline:
            self._stop("wall", used, f"the worker ran past the {lim.wall():.0f} s wall-clock ceiling "
                                     f"({used:.1f} CPU-seconds counted)")

    def _stop(self, kind: str, used: float, why: str):
        self.worker.close_quietly()
        from .sandbox import WorkerDied

        raise WorkerDied("timeout", f"{why}; worker killed", kind=kind, cpu_s=used)
