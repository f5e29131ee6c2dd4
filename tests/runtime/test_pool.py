"""GPU pool on CPU with the built-in model: spawn workers, a failed boot excluded, a killed worker's session
failing clearly while the others keep serving, sticky sessions, migration by snapshot + hydrate (in process and
between worker processes), resume, and a worker stop that escalates and reaps each child exactly once."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading

import numpy as np
import pytest

from fastvideo.api import GenerationRequest, OutputConfig, RequestError, SamplingConfig
from fastvideo.runtime.pool import GpuPool, LocalWorker, PoolBootError, SessionLost, WorkerDied
from fastvideo.runtime.pool_process import ProcessWorker
from fastvideo.runtime.state_blobs import state_blob_ids
from fastvideo.runtime.stores import StoreConfig, open_stores
from fastvideo.runtime.worker import WorkerConfig

WARM = GenerationRequest(prompt="warm", sampling=SamplingConfig(width=32, height=32, num_frames=1,
                                                                num_inference_steps=1, guidance_scale=1.0, seed=0),
                         output=OutputConfig(return_frames=False))


def request(seed: int, steps: int = 2, **extra) -> dict:
    return {"prompt": "a lighthouse at dusk", "sampling": {"width": 32, "height": 32, "num_frames": 5,
                                                           "num_inference_steps": steps, "guidance_scale": 1.0,
                                                           "seed": seed}, **extra}


def close(a, b) -> bool:
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).max() <= 1


def test_process_pool_boot_failure_worker_death_and_resume(tiny_model_dir, tiny_generator, caplog):
    config = {"model_path": str(tiny_model_dir), "engine": {"device": "cpu", "dtype": "fp32"}}
    wc = WorkerConfig(warmup_request=WARM)
    stores = open_stores(StoreConfig(blob_threshold_bytes=0))  # every state tensor goes to the BlobStore
    workers = [ProcessWorker("w0", config, worker_config=wc, threads=1),
               ProcessWorker("w1", config, worker_config=wc, threads=1),
               ProcessWorker("broken", {"model_path": "/nonexistent/wan"}, worker_config=wc, threads=1)]
    pool = GpuPool(workers, stores=stores)
    try:
        infos = {i.worker_id: i for i in pool.start()}
        assert infos["w0"].status == infos["w1"].status == "ready"
        assert infos["broken"].status == "failed" and "/nonexistent/wan" in infos["broken"].error
        assert infos["w0"].pid != os.getpid() and infos["w0"].pid != infos["w1"].pid

        steps: list[tuple[int, int]] = []
        a0 = pool.submit(request(1), session_id="a", on_progress=lambda s, t: steps.append((s, t))).result(60)
        b0 = pool.generate(request(2), session_id="b", timeout=60)
        assert steps == [(1, 2), (2, 2)] and a0.state is None  # not asked for: not returned
        assert pool.sessions["a"].worker_id != pool.sessions["b"].worker_id  # spread over the workers
        assert not any(w.load for w in pool.ready_workers)
        a1 = pool.generate(request(3, output={"return_state": True}), session_id="a", timeout=60)
        assert a1.metadata["branch"] == "continuation" and a1.metadata["segment_index"] == 1  # sticky, hot state
        assert state_blob_ids(pool.snapshot("a"))  # persisted with its tensor by blob id
        assert stores.sessions.get("a").segment_index == 1

        # a session moves between worker processes by snapshot (pickled out, blobs to the store) + hydrate
        c0 = pool.generate(request(10, output={"return_state": True}), session_id="c", timeout=60)
        source = pool.sessions["c"].worker_id
        target = pool.migrate("c")
        assert target != source and pool.sessions["c"].worker_id == target
        c1 = pool.generate(request(11), session_id="c", timeout=60)
        assert c1.metadata["branch"] == "continuation" and c1.metadata["segment_index"] == 1
        assert close(c1.frames, tiny_generator.generate(request(11, state=c0.state)).frames)
        pool.close_session("c")

        victim = pool.workers[pool.sessions["a"].worker_id]
        survivor = pool.workers[pool.sessions["b"].worker_id]
        started = threading.Event()
        in_flight = pool.submit(request(4, steps=1000), session_id="a", on_progress=lambda s, t: started.set())
        assert started.wait(30)  # running on the victim now
        os.kill(victim.pid, signal.SIGKILL)
        with pytest.raises(WorkerDied, match=rf"worker {victim.worker_id} \(pid \d+\) died: exit code -9"):
            in_flight.result(30)
        with pytest.raises(SessionLost, match=r"died.*hot state is gone.*resume\('a'\)"):
            pool.generate(request(5), session_id="a", timeout=60)
        assert victim.status == "dead" and {i.worker_id: i.status for i in pool.info()}[victim.worker_id] == "dead"

        b1 = pool.generate(request(6), session_id="b", timeout=60)  # the other session keeps going
        assert b1.metadata["branch"] == "continuation" and b0.metadata["branch"] == "initial"
        fresh = pool.generate(request(7), timeout=60)  # new work avoids the dead worker
        assert fresh.frames.shape == (5, 32, 32, 3)

        assert pool.resume("a") == survivor.worker_id  # from the last stored snapshot (segment 1)
        a2 = pool.generate(request(8), session_id="a", timeout=60)
        assert a2.metadata["segment_index"] == 2 and a2.metadata["branch"] == "continuation"
        direct = tiny_generator.generate(request(8, state=a1.state))
        assert close(a2.frames, direct.frames)
        with pytest.raises(RequestError) as refused:
            pool.generate(request(9, sampling={"width": 30}), timeout=60)
        # the same error crosses the process boundary: field and reason, not a re-parsed message
        assert refused.value.field == "sampling.width"
        assert str(refused.value) == "sampling.width: 30 is not a multiple of 16 (the VAE's 8x downsampling times " \
                                     "the DiT's 2x2 patches); use 16 or 32"
    finally:
        pool.stop()
    assert all(w._process.exitcode is not None for w in workers)
    # every child reaped with its own exit status: the survivor stopped cleanly (no SIGTERM), the
    # failed boot exited 1, the victim shows the SIGKILL
    assert {w.worker_id: w.exitcode for w in workers} == {victim.worker_id: -9, survivor.worker_id: 0, "broken": 1}
    assert not [r.getMessage() for r in caplog.records if "did not exit" in r.getMessage()]


def _ignore_sigterm_and_sleep(armed) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    armed.set()
    threading.Event().wait(120)


def test_process_worker_stop_escalates_and_reaps_exactly_once(caplog):
    """A child that ignores the stop message and SIGTERM gets SIGKILL; a second thread waiting for the
    same exit (as the reader thread does) sees the same status instead of a lost ECHILD."""
    ctx = mp.get_context("fork")  # a trivial child: no model, no torch import
    worker = ProcessWorker("stubborn", {"model_path": "/nonexistent/wan"})
    armed = ctx.Event()
    worker._process = ctx.Process(target=_ignore_sigterm_and_sleep, args=(armed,), daemon=True)
    worker._process.start()
    worker.pid, worker.status = worker._process.pid, "failed"  # nothing to send: straight to the signals
    assert armed.wait(30)
    seen: list = []
    waiter = threading.Thread(target=lambda: seen.append(worker._wait_exit(60)))
    waiter.start()
    worker.stop(timeout=0.2, grace_s=0.5)
    waiter.join(30)
    assert worker.exitcode == -signal.SIGKILL and seen == [-signal.SIGKILL]
    messages = [r.getMessage() for r in caplog.records]
    assert any("sending SIGTERM" in m for m in messages) and any("sending SIGKILL" in m for m in messages)
    worker.stop(timeout=0.1, grace_s=0.1)  # stopping a reaped worker sends nothing
    assert not [m for m in (r.getMessage() for r in caplog.records) if m not in messages]


def test_in_process_pool_sticky_sessions_migrate_and_restart(tiny_generator):
    wc = WorkerConfig(warmup_request=WARM)
    stores = open_stores(StoreConfig(blob_threshold_bytes=0))
    pool = GpuPool([LocalWorker("g0", generator=tiny_generator, worker_config=wc),
                    LocalWorker("g1", generator=tiny_generator, worker_config=wc)], stores=stores)
    pool.start()
    try:
        first = pool.generate(request(1, output={"return_state": True}), session_id="s", timeout=60)
        home = pool.sessions["s"].worker_id
        assert pool.workers[home].session_ids() == ["s"]
        target = pool.migrate("s")
        assert target != home and pool.sessions["s"].worker_id == target
        assert pool.workers[home].session_ids() == [] and pool.workers[target].session_ids() == ["s"]
        second = pool.generate(request(2), session_id="s", timeout=60)
        assert second.metadata["segment_index"] == 1
        assert np.array_equal(second.frames, tiny_generator.generate(request(2, state=first.state)).frames)
    finally:
        pool.stop()

    # a restarted server (new pool, new workers, same stores) resumes the session from the SessionStore
    restarted = GpuPool([LocalWorker("g2", generator=tiny_generator, worker_config=wc)], stores=stores)
    restarted.start()
    try:
        third = restarted.generate(request(3), session_id="s", timeout=60)
        assert third.metadata["segment_index"] == 2 and restarted.sessions["s"].worker_id == "g2"
        restarted.close_session("s")
        assert stores.sessions.get("s") is None
        with pytest.raises(KeyError, match="no stored snapshot"):
            restarted.resume("s")
    finally:
        restarted.stop()


def test_pool_with_no_bootable_worker_raises(tiny_model_dir):
    pool = GpuPool([LocalWorker("x", generator_config={"model_path": "/nonexistent/a"}),
                    LocalWorker("y", generator_config={"model_path": "/nonexistent/b"})])
    with pytest.raises(PoolBootError, match=r"x: boot failed: ModelLoadError.*y: boot failed"):
        pool.start()


def test_pool_refuses_devices_that_are_not_its_workers(tiny_generator, monkeypatch):
    import torch

    from fastvideo.api import ConfigError
    from fastvideo.runtime.device_pool import DevicePool
    from fastvideo.runtime.pool import PoolConfig

    with pytest.raises(ConfigError, match=r"^pool.devices: \['cpu', 'cpu'\] are not the devices of these workers"):
        GpuPool([LocalWorker("a", generator=tiny_generator, device="cpu")], config=PoolConfig(devices=["cpu", "cpu"]))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ConfigError, match=r"^pool.devices\[0\]: .*already loaded, which is on cpu, not cuda:0"):
        DevicePool(tiny_generator, PoolConfig(devices=["0", "1"]))


@pytest.mark.parametrize("entry", ["\u00b2", "cuda:\u0663", "gpu0", "cuda:-1", ""])
def test_a_device_entry_that_names_no_device_is_a_config_error(entry):
    from fastvideo.api import ConfigError
    from fastvideo.runtime.pool import normalize_devices

    with pytest.raises(ConfigError) as info:
        normalize_devices(["0", entry])
    assert info.value.path == "devices[1]"


def test_a_pool_refuses_previews_instead_of_dropping_them(tiny_generator):
    import asyncio

    from fastvideo.runtime.device_pool import DevicePool
    from fastvideo.runtime.pool import PoolConfig

    pool = DevicePool(tiny_generator, PoolConfig(devices=["cpu"]))
    request = {"prompt": "p", "output": {"preview_interval_steps": 1}}

    async def first_event():
        return await pool.generate_async(request).__anext__()

    with pytest.raises(RequestError) as info:  # before any work is submitted
        asyncio.run(first_event())
    assert info.value.field == "output.preview_interval_steps"
