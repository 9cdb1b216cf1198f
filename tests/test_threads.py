"""The engine's thread governor: half the decode threads while the box keeps the engine waiting."""

from __future__ import annotations

import threading

from suite.inference.threads import FIRST_RETRY_S, LAST_RETRY_S, SETTLE_STEPS, RunqueueWait, ThreadGovernor


class Box:
    """A fake clock and runqueue: each decode takes 50 ms, ``busy`` of it waiting for a CPU."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waited = 0.0
        self.applied: list[int] = []

    def decode(self, governor: ThreadGovernor, busy: float, n: int = 1) -> None:
        for _ in range(n):
            governor.begin()
            self.now += 0.05
            self.waited += 0.05 * busy
            governor.end()


def governor_on(box: Box, threads: int = 2) -> ThreadGovernor:
    return ThreadGovernor(threads, box.applied.append, wait=lambda: box.waited, clock=lambda: box.now)


def test_a_quiet_box_keeps_every_thread():
    box = Box()
    g = governor_on(box)
    box.decode(g, busy=0.02, n=1000)
    assert g.current == 2 and box.applied == []


def test_contention_halves_the_threads_and_retries_with_growing_delays():
    box = Box()
    g = governor_on(box, threads=16)
    box.decode(g, busy=0.6, n=2)  # two decodes that waited 60 % of their time
    assert box.applied == [8] and g.current == 8
    box.decode(g, busy=0.0, n=30)  # quiet now, but the first retry waits FIRST_RETRY_S
    assert g.current == 8
    box.now = g.retry_at
    box.decode(g, busy=0.0, n=1)
    assert box.applied == [8, 16]
    delays = []
    for _ in range(8):  # every try meets contention again: the delay doubles up to a minute
        box.decode(g, busy=0.6, n=SETTLE_STEPS)
        assert g.current == 8
        delays.append(round(g.retry_at - box.now, 6))
        box.decode(g, busy=0.0, n=30)
        assert g.current == 8
        box.now = g.retry_at
        box.decode(g, busy=0.0, n=1)
        assert g.current == 16
    assert 2 * FIRST_RETRY_S - 0.25 <= delays[0] <= 2 * FIRST_RETRY_S and LAST_RETRY_S - 0.25 <= delays[-1]
    box.decode(g, busy=0.0, n=600)  # a long quiet stretch: the next retry is quick again
    box.decode(g, busy=0.6, n=SETTLE_STEPS)
    assert g.current == 8 and FIRST_RETRY_S - 0.25 <= g.retry_at - box.now <= FIRST_RETRY_S


def test_still_busy_with_half_the_threads_stays_at_half():
    box = Box()
    g = governor_on(box)
    box.decode(g, busy=0.5, n=SETTLE_STEPS)
    box.now += 10 * LAST_RETRY_S
    box.decode(g, busy=0.3, n=200)
    assert box.applied == [1] and g.current == 1


def test_one_thread_or_no_schedstat_is_left_alone():
    box = Box()
    g = governor_on(box, threads=1)
    box.decode(g, busy=0.9, n=50)
    assert box.applied == [] and not g.active
    blind = ThreadGovernor(2, box.applied.append, wait=lambda: None, clock=lambda: box.now)
    box.decode(blind, busy=0.9, n=50)
    assert box.applied == []


def test_runqueue_wait_reads_this_threads_schedstat():
    out = []

    def worker():
        wait = RunqueueWait()
        first = wait()
        sum(range(200_000))
        out.append((first, wait()))
        wait.close()

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    first, second = out[0]
    assert first is not None and 0 <= first <= second


def test_the_spin_count_default_follows_the_thread_adaptation():
    from suite.services import inference_env
    from suite.settings import ADAPTIVE_SPINCOUNT, FIXED_SPINCOUNT, InferenceSettings, Settings

    assert InferenceSettings().spincount() == ADAPTIVE_SPINCOUNT  # batched, adaptive, Linux schedstat
    assert InferenceSettings(adaptive_threads=False).spincount() == FIXED_SPINCOUNT
    assert InferenceSettings(engine="serial").spincount() == FIXED_SPINCOUNT
    assert InferenceSettings(omp_spincount=4321).spincount() == 4321
    assert inference_env(Settings(inference={"omp_spincount": 77})) == {"GOMP_SPINCOUNT": "77"}
