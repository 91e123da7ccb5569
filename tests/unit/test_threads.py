"""The worker's CPU thread policy (model/engines/threads.py): TORCH_THREADS fixed or auto."""

from __future__ import annotations

import pytest

from model.engines.threads import ComputeThreads, CpuLoad, free_cores, wait_policy


@pytest.mark.parametrize(
    ("cores", "others", "want"),
    [(2, 0.0, 2), (2, 0.3, 2), (2, 0.7, 1), (2, 1.0, 1), (2, 5.0, 1), (8, 2.2, 6), (1, 0.0, 1)],
)
def test_auto_uses_the_cores_other_processes_leave(cores, others, want):
    assert free_cores(cores, others) == want


def test_a_fixed_count_sleeps_between_ops_and_auto_spins():
    assert wait_policy(None) is None  # libgomp's default: spin a while, then sleep
    assert wait_policy(1) is None  # one thread never waits for another
    assert wait_policy(2) == "PASSIVE"


def write_stat(tmp_path, busy: int, idle: int, own: int):
    (tmp_path / "stat").write_text(f"cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\ncpu0 1 2 3 4\n")
    # /proc/self/stat: a command name with spaces and parentheses must not shift the fields
    fields = ["S"] + ["0"] * 10 + [str(own), "0"] + ["0"] * 30
    (tmp_path / "own").write_text("42 (python (x) y) " + " ".join(fields))


def test_cpu_load_counts_only_other_processes(tmp_path):
    clock = iter([100.0, 101.0, 102.0])
    write_stat(tmp_path, busy=1000, idle=1000, own=500)
    load = CpuLoad(str(tmp_path / "stat"), str(tmp_path / "own"), clock=lambda: next(clock))
    tick = load._tick
    # In one second: 2 cores' worth of busy time, 0.5 of it ours -> others kept 1.5 busy.
    write_stat(tmp_path, busy=1000 + 2 * tick, idle=1000, own=500 + tick // 2)
    assert load.others_busy() == pytest.approx(1.5, abs=0.02)
    write_stat(tmp_path, busy=1000 + 3 * tick, idle=1000 + tick, own=500 + tick // 2 + tick)
    assert load.others_busy() == pytest.approx(0.0, abs=0.02)  # all of it was ours


def test_a_window_the_process_did_not_watch_is_no_reading(tmp_path):
    """A stopped worker (SIGSTOP, a suspended laptop) resumes with a window that holds another
    process's burst: that must not drop the next request to one thread."""
    clock = iter([100.0, 101.0, 110.0, 111.0])
    write_stat(tmp_path, busy=1000, idle=1000, own=500)
    load = CpuLoad(str(tmp_path / "stat"), str(tmp_path / "own"), clock=lambda: next(clock))
    tick = load._tick
    write_stat(tmp_path, busy=1000 + tick, idle=1000 + tick, own=500)
    assert load.others_busy(2.0) == pytest.approx(1.0, abs=0.02)
    write_stat(tmp_path, busy=1000 + 19 * tick, idle=1000 + tick, own=500)  # 9 s, 2 cores busy
    assert load.others_busy(2.0) is None
    write_stat(tmp_path, busy=1000 + 19 * tick, idle=1000 + 3 * tick, own=500)  # then idle
    assert load.others_busy(2.0) == pytest.approx(0.0, abs=0.02)


def test_cpu_load_without_proc_reads_as_idle(tmp_path):
    load = CpuLoad(str(tmp_path / "missing"), str(tmp_path / "missing"))
    assert load.others_busy() == 0.0


class FakeLoad:
    def __init__(self, values):
        self.values = list(values)

    def others_busy(self, max_window=None):
        return self.values.pop(0)


def test_auto_follows_the_load_and_sizes_the_calling_thread():
    set_to = []
    clock = [0.0]
    policy = ComputeThreads(
        None,
        cores=2,
        load=FakeLoad([0.1, 1.2, 0.2]),
        clock=lambda: clock[0],
        set_threads=set_to.append,
    )
    policy.apply_here()
    assert policy.count == 2 and set_to == [2]
    clock[0] = 0.5  # between measurements: nothing re-read, nothing re-set
    policy.apply_here()
    assert set_to == [2]
    clock[0] = 1.1  # another process took a core
    policy.apply_here()
    assert policy.count == 1 and set_to == [2, 1]
    assert policy.describe() == "auto (now 1 of 2)"
    clock[0] = 2.2  # and gave it back
    policy.apply_here()
    assert policy.count == 2 and set_to == [2, 1, 2]


def test_auto_keeps_its_count_without_a_reading():
    set_to, clock = [], [0.0]
    policy = ComputeThreads(
        None, cores=2, load=FakeLoad([None, 1.5, None]), clock=lambda: clock[0],
        set_threads=set_to.append,
    )  # fmt: skip
    policy.apply_here()
    assert policy.count == 2 and set_to == [2]
    clock[0] = 1.1
    policy.apply_here()
    clock[0] = 2.2  # the process was stopped: no reading, so still one thread, not two
    policy.apply_here()
    assert policy.count == 1 and set_to == [2, 1]


def test_a_fixed_count_never_measures():
    set_to = []
    policy = ComputeThreads(3, cores=8, load=FakeLoad([]), set_threads=set_to.append)  # no pop
    policy.apply_here()
    policy.apply_here()
    assert policy.count == 3 and set_to == [3] and policy.describe() == "3"
