"""How many CPU threads the worker's model computes with (TORCH_THREADS), and on which thread.

Two facts about torch's OpenMP (libgomp) on a small CPU decide this (bench/RESULTS.md,
"Threads, again"):
- Each Python thread that runs a parallel op gets an OpenMP team of its own, and once the
  teams' threads outnumber the cores libgomp stops spinning between ops and sleeps instead,
  which costs a wake-up per op: SmolLM2 decoded at 2 threads in a second thread 85-100 ms per
  token, 63 at 1 thread, 49 at 2 threads in one team. So the worker's main thread computes
  with 1 thread (it loads the model and reads commands), and the thread that runs the batch is
  the one whose team is sized here.
- Threads that spin between ops are fastest on an idle machine (8 SmolLM2 streams: 102 tok/s
  against 78 at 1 thread and 64 sleeping), and the slowest of all when another process
  holds a core (27 tok/s against 57 at 1 thread): the spinning thread waits for one that is
  not running. So by default ("auto") the team is every core that other processes leave
  free, re-measured every second from /proc/stat, and it spins; a fixed TORCH_THREADS above
  1 sleeps between ops (OMP_WAIT_POLICY=PASSIVE) instead, the safe choice when nothing
  watches the load.
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger(__name__)

CHECK_SECONDS = 1.0  # how often "auto" re-measures the other processes' load
# A window this much longer than CHECK_SECONDS was not watched: the idle batch thread checks
# every 0.1 s, so only a stopped process (SIGSTOP, a suspended laptop) or a step of seconds
# makes one. Its busy time is whatever ran while we could not, e.g. another server's burst, and
# acting on it ran the next request's first second on one thread (bench/RESULTS.md, part 5).
STALE_FACTOR = 2.0


def available_cores() -> int:
    """Cores this process may run on (a container's or taskset's limit, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def wait_policy(setting: int | None) -> str | None:
    """OMP_WAIT_POLICY for the worker (read by libgomp when torch loads): None leaves libgomp's
    default (spin a while, then sleep), which "auto" needs; a fixed count sleeps."""
    return "PASSIVE" if setting is not None and setting > 1 else None


def free_cores(cores: int, others_busy: float) -> int:
    """Threads for a team when other processes keep `others_busy` cores busy: the cores left,
    rounded to the nearest, at least one."""
    return max(1, min(cores, int(cores - others_busy + 0.5)))


class CpuLoad:
    """Cores other processes kept busy since the last reading (Linux /proc; elsewhere 0)."""

    def __init__(
        self, stat: str = "/proc/stat", own: str = "/proc/self/stat", clock=time.monotonic
    ):
        self._stat, self._own, self._clock = stat, own, clock
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._last = self._read()

    def _read(self) -> tuple[float, float, float] | None:
        try:
            with open(self._stat) as f:
                cpu = [int(v) for v in f.readline().split()[1:]]
            with open(self._own) as f:
                fields = f.read().rpartition(")")[2].split()
        except (OSError, ValueError, IndexError):
            return None
        idle = cpu[3] + (cpu[4] if len(cpu) > 4 else 0)  # idle + iowait
        # utime, stime of this process (every thread): fields 14 and 15, 12 and 13 after ")"
        own = int(fields[11]) + int(fields[12])
        return self._clock(), (sum(cpu[:8]) - idle) / self._tick, own / self._tick

    def others_busy(self, max_window: float | None = None) -> float | None:
        """Cores the other processes kept busy since the last call; None when that was longer
        ago than `max_window` seconds (no reading: the caller keeps what it had)."""
        now = self._read()
        last, self._last = self._last, now
        if now is None or last is None or now[0] <= last[0]:
            return 0.0
        window = now[0] - last[0]
        if max_window is not None and window > max_window:
            return None
        busy, own = now[1] - last[1], now[2] - last[2]
        return max(0.0, (busy - own) / window)


class ComputeThreads:
    """The team size of the thread that runs the model: TORCH_THREADS, or "auto" (None)."""

    def __init__(
        self,
        setting: int | None,
        cores: int | None = None,
        load: CpuLoad | None = None,
        clock=time.monotonic,
        set_threads=None,
    ):
        self.setting = setting
        self.cores = cores or available_cores()
        self.count = setting or self.cores
        self._load = (load or CpuLoad()) if setting is None else None
        self._next = 0.0
        self._applied = 0
        self._clock = clock
        self._set_threads = set_threads  # None: torch.set_num_threads (imported when first used)

    @property
    def auto(self) -> bool:
        return self.setting is None

    def describe(self) -> str:
        return f"auto (now {self.count} of {self.cores})" if self.auto else str(self.count)

    def apply_here(self) -> None:
        """Called by the computing thread before each step: sizes this thread's team (cheap
        between re-measurements)."""
        now = self._clock()
        if self._load is not None and now >= self._next:
            self._next = now + CHECK_SECONDS
            others = self._load.others_busy(STALE_FACTOR * CHECK_SECONDS)
            count = self.count if others is None else free_cores(self.cores, others)
            if count != self.count:
                log.info("other processes' load: torch now uses %d CPU thread(s)", count)
                self.count = count
        if self._applied != self.count:
            if self._set_threads is None:
                import torch

                self._set_threads = torch.set_num_threads
            self._set_threads(self.count)
            self._applied = self.count
