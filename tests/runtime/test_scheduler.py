"""Scheduler policy (ordering, batching, limits, cancellation, fairness) and the dispatch loop, with a fake executor."""

from __future__ import annotations

import threading
import time

import pytest

from fastvideo.runtime.dispatcher import Dispatcher, SyncListener
from fastvideo.runtime.scheduler import BucketKey, QueueFull, Scheduler, SchedulerConfig, WorkItem

A = BucketKey(64, 64, 3, 4)
B = BucketKey(128, 64, 3, 4)
C = BucketKey(64, 64, 4, 4, branch="continuation")


def item(rid: str, key: BucketKey = A, listener=None) -> WorkItem:
    return WorkItem(request_id=rid, key=key, listener=listener)


def ids(batch) -> list[str]:
    return [i.request_id for i in batch]


# ---------------------------------------------------------------------------------------- pure policy
def test_fifo_with_max_batch_1():
    sched = Scheduler(SchedulerConfig(max_batch=1))
    for rid, key in [("a", A), ("b", B), ("c", A)]:
        sched.admit(item(rid, key))
    order = []
    while sched.queue_depth:
        batch, _ = sched.next_batch()
        order.append(ids(batch))
    assert order == [["a"], ["b"], ["c"]]
    assert sched.running_count == 3


def test_batches_share_a_bucket_and_respect_max_batch():
    sched = Scheduler(SchedulerConfig(max_batch=3))
    for rid, key in [("a1", A), ("b1", B), ("a2", A), ("c1", C), ("a3", A), ("a4", A), ("b2", B)]:
        sched.admit(item(rid, key))
    batches = []
    while sched.queue_depth:
        batch, _ = sched.next_batch()
        assert len({i.key for i in batch}) == 1  # one bucket per batch
        batches.append(ids(batch))
    assert batches[0] == ["a1", "a2", "a3"]  # the fullest bucket first, arrival order inside
    assert batches[1] == ["b1", "b2"]
    assert sorted(map(tuple, batches[2:])) == [("a4",), ("c1",)]


def test_bucket_key_separates_branch_cfg_steps_and_size():
    base = dict(width=64, height=64, latent_frames=3, steps=4)
    keys = {BucketKey(**base), BucketKey(**base, branch="continuation"), BucketKey(**base, cfg=False),
            BucketKey(**{**base, "steps": 8}), BucketKey(**{**base, "width": 128})}
    assert len(keys) == 5
    with pytest.raises(ValueError, match="branch"):
        BucketKey(**base, branch="sideways")


def test_admission_limit_rejects_before_queueing():
    sched = Scheduler(SchedulerConfig(max_queue=2, retry_after_s=9))
    sched.admit(item("a"))
    sched.admit(item("b"))
    with pytest.raises(QueueFull) as err:
        sched.admit(item("c"))
    assert err.value.retry_after_s == 9 and err.value.depth == 2
    assert sched.queued_ids() == ["a", "b"]
    sched.admit(item("warm"), force=True)  # internal work bypasses the limit
    with pytest.raises(ValueError, match="already queued"):
        sched.admit(item("a"), force=True)
    sched.next_batch()  # running items do not count against max_queue
    sched.next_batch()
    sched.admit(item("d"))


def test_fairness_odd_shape_is_not_starved():
    """A steady stream of same-bucket requests cannot hold back an odd-shaped one past max_bypass."""
    sched = Scheduler(SchedulerConfig(max_batch=2, max_bypass=3, max_queue=100))
    sched.admit(item("odd", B))
    served_at = None
    n = 0
    for round_ in range(20):
        for _ in range(2):  # keeps the popular bucket full
            sched.admit(item(f"p{n}", A))
            n += 1
        batch, _ = sched.next_batch()
        if "odd" in ids(batch):
            served_at = round_
            break
    assert served_at == 3  # jumped by exactly max_bypass batches, then served


def test_fairness_two_odd_shapes_each_bounded_and_in_arrival_order():
    """Two odd shapes (different buckets) behind a saturating popular bucket: each is served, the older
    first, the younger right after it (it has been jumped max_bypass times by then too)."""
    sched = Scheduler(SchedulerConfig(max_batch=2, max_bypass=3, max_queue=100))
    sched.admit(item("odd-b", B))
    sched.admit(item("odd-c", C))
    served: dict[str, int] = {}
    n = 0
    for round_ in range(20):
        for _ in range(2):
            sched.admit(item(f"p{n}", A))
            n += 1
        batch, _ = sched.next_batch()
        for rid in ids(batch):
            if rid.startswith("odd"):
                served[rid] = round_
        if len(served) == 2:
            break
    assert served == {"odd-b": 3, "odd-c": 4}


def test_without_fairness_bound_popular_bucket_would_win():
    sched = Scheduler(SchedulerConfig(max_batch=2, max_bypass=100, max_queue=100))
    sched.admit(item("odd", B))
    for n in range(10):
        sched.admit(item(f"p{n}", A))
    batch, _ = sched.next_batch()
    assert ids(batch) == ["p0", "p1"] and sched.get("odd").bypassed == 1


def test_cancel_queued_and_running():
    sched = Scheduler(SchedulerConfig(max_batch=1))
    sched.admit(item("a"))
    sched.admit(item("b"))
    batch, _ = sched.next_batch()
    assert sched.cancel("b")[0] == "queued" and sched.queued_ids() == []
    where, running = sched.cancel("a")
    assert where == "running" and running is batch[0] and running.is_cancelled()
    assert sched.cancel("zzz") == ("unknown", None)
    # a queued item whose external flag flips is dropped at the next pick
    flag = threading.Event()
    late = item("c")
    late._external_cancel = flag.is_set
    sched.admit(late)
    flag.set()
    batch, dropped = sched.next_batch()
    assert batch == [] and ids(dropped) == ["c"]


def test_wait_for_work_needs_a_notify():
    sched = Scheduler()
    sched.admit(item("a"), notify=False)
    assert sched.wait_for_work(timeout=0.05) is False  # admitted but not notified yet
    sched.notify()
    assert sched.wait_for_work(timeout=0.05) is True
    sched.close()
    assert sched.wait_for_work(timeout=0.05) is False


# ---------------------------------------------------------------------------------------- dispatch loop
class FakeExecutor:
    """Records what the dispatcher asks for; optionally holds the first batch at a gate."""

    def __init__(self, gate: threading.Event | None = None, fail: set[str] = frozenset(), steps: int = 3) -> None:
        self.gate = gate
        self.fail = fail
        self.steps = steps
        self.prepared: list[str] = []
        self.batches: list[list[str]] = []
        self.finished: list[str] = []
        self.released: list[str] = []
        self.lock = threading.Lock()
        self.step_started = threading.Event()

    def prepare(self, it: WorkItem) -> None:
        with self.lock:
            self.prepared.append(it.request_id)
        if it.request_id in self.fail:
            raise RuntimeError(f"boom {it.request_id}")
        it.ctx = {"prepared": True}

    def denoise(self, batch, on_step):
        with self.lock:
            self.batches.append(ids(batch))
        dropped = []
        alive = list(batch)
        for step in range(self.steps):
            for it in list(alive):
                if it.is_cancelled():
                    alive.remove(it)
                    dropped.append((it, RuntimeError("cancelled")))
            for it in alive:
                on_step(it, step + 1, self.steps)
            self.step_started.set()
            if self.gate is not None and len(self.batches) == 1:
                assert self.gate.wait(10)
        return dropped

    def finish(self, it: WorkItem):
        assert it.ctx == {"prepared": True}
        with self.lock:
            self.finished.append(it.request_id)
        return f"result:{it.request_id}"

    def release(self, it: WorkItem) -> None:
        with self.lock:
            self.released.append(it.request_id)


def make(max_batch=2, overlap=False, **kw):
    ex = FakeExecutor(**kw)
    disp = Dispatcher(Scheduler(SchedulerConfig(max_batch=max_batch, max_queue=50)), ex, overlap=overlap)
    disp.start()
    return ex, disp


@pytest.mark.parametrize("overlap", [False, True])
def test_dispatcher_batches_and_reports_every_step(overlap):
    gate = threading.Event()
    ex, disp = make(max_batch=2, overlap=overlap, gate=gate)
    first = SyncListener()
    disp.submit(item("first", B, first))
    assert ex.step_started.wait(5)  # the first batch is running; the next ones queue up behind it
    listeners = {rid: SyncListener() for rid in ["a1", "b1", "a2", "a3"]}
    for rid, lis in listeners.items():
        disp.submit(item(rid, B if rid.startswith("b") else A, lis), notify=False)
    disp.scheduler.notify()
    gate.set()
    assert first.wait(5) == "result:first"
    results = {rid: lis.wait(5) for rid, lis in listeners.items()}
    disp.stop()
    assert results == {rid: f"result:{rid}" for rid in listeners}
    assert ex.batches[0] == ["first"] and ex.batches[1] == ["a1", "a2"]
    assert sorted(map(tuple, ex.batches[2:])) == [("a3",), ("b1",)]
    assert all(lis.steps == [(1, 3), (2, 3), (3, 3)] for lis in listeners.values())
    assert sorted(ex.released) == sorted(["first", *listeners])  # every item released exactly once


@pytest.mark.parametrize("overlap", [False, True])
def test_dispatcher_cancels_running_member_and_keeps_the_rest(overlap):
    gate = threading.Event()
    ex, disp = make(max_batch=3, overlap=overlap, gate=gate)
    lis = {rid: SyncListener() for rid in ["a", "b", "c"]}
    for rid, listener in lis.items():
        disp.submit(item(rid, A, listener), notify=False)
    queued = SyncListener()
    disp.submit(item("q", B, queued), notify=False)
    disp.scheduler.notify()
    assert ex.step_started.wait(5)
    assert disp.cancel("b") == "running"
    assert disp.cancel("q") == "queued"
    assert queued.done.is_set() and "before it started" in queued.cancelled  # reported at once
    gate.set()
    assert lis["a"].wait(5) == "result:a" and lis["c"].wait(5) == "result:c"
    assert lis["b"].done.wait(5) and lis["b"].cancelled and lis["b"].result is None
    disp.stop()
    assert "b" not in ex.finished and "q" not in ex.finished and ex.batches == [["a", "b", "c"]]


def test_dispatcher_failures_are_isolated_and_listener_bugs_do_not_kill_it():
    ex, disp = make(max_batch=2, fail={"bad"})

    class Exploding(SyncListener):
        def on_step(self, it, step, total):
            raise RuntimeError("listener bug")

    bad, boom, good = SyncListener(), Exploding(), SyncListener()
    disp.submit(item("bad", A, bad), notify=False)
    disp.submit(item("boom", A, boom), notify=False)
    disp.submit(item("good", B, good))
    with pytest.raises(RuntimeError, match="boom bad"):
        bad.wait(5)
    assert boom.wait(5) == "result:boom" and good.wait(5) == "result:good"
    disp.stop()


def test_stop_cancels_queued_work_as_shutting_down():
    gate = threading.Event()
    ex, disp = make(max_batch=1, gate=gate)
    running, waiting = SyncListener(), SyncListener()
    disp.submit(item("run", A, running))
    assert ex.step_started.wait(5)
    disp.submit(item("wait", B, waiting))
    stopper = threading.Thread(target=disp.stop)
    stopper.start()
    time.sleep(0.05)
    assert waiting.done.wait(5) and "shutting down" in waiting.cancelled
    gate.set()
    stopper.join(5)
    assert running.wait(1) == "result:run"
    with pytest.raises(RuntimeError, match="closed"):
        disp.submit(item("late", A, SyncListener()))


def test_overlap_prepares_queued_items_while_a_batch_denoises():
    gate = threading.Event()
    ex, disp = make(max_batch=1, overlap=True, gate=gate)
    first, second = SyncListener(), SyncListener()
    disp.submit(item("first", A, first))
    assert ex.step_started.wait(5)
    disp.submit(item("second", B, second), notify=False)
    deadline = time.time() + 5
    while "second" not in ex.prepared and time.time() < deadline:
        time.sleep(0.01)
    assert "second" in ex.prepared and ex.batches == [["first"]]  # encoded ahead, not yet denoised
    gate.set()
    disp.scheduler.notify()
    assert second.wait(5) == "result:second" and ex.prepared.count("second") == 1
    disp.stop()
