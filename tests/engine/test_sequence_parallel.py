"""Ulysses sequence parallelism of the Wan DiT on CPU: 2 gloo ranks give the single-process output.

One spawn of two processes (torch.distributed, gloo, 127.0.0.1) runs every distributed case; rank 0 compares
with the same tiny model run alone and saves the figures, which the tests below assert on.
"""

from __future__ import annotations

import datetime
import socket
import time

import pytest
import torch

from fastvideo.api.errors import FastVideoError
from fastvideo.engine.models.wan.transformer import WanDiTConfig, WanTransformer3DModel
from fastvideo.engine.sequence_parallel import SequenceParallel, SequenceParallelError

dist = pytest.importorskip("torch.distributed")
if not dist.is_available():  # pragma: no cover - torch builds without distributed
    pytest.skip("torch.distributed is unavailable in this torch build", allow_module_level=True)

TOLERANCE = 1e-5
WORLD = 2
# (name, latent (B, C, F, H, W)); patch (1, 2, 2): tokens = F * H/2 * W/2
CASES = {
    "even_8_tokens": (2, 4, 2, 4, 4),   # 8 tokens, 4 per rank
    "uneven_9_tokens": (2, 4, 3, 2, 6),  # 9 tokens: padded to 10, one pad token on rank 1
    "uneven_3_tokens": (2, 4, 1, 2, 6),  # 3 tokens: 2 per rank, rank 1 holds one real token
}


def _tiny_dit(heads: int = 4, image_dim: int | None = None) -> WanTransformer3DModel:
    torch.manual_seed(0)
    config = WanDiTConfig(num_attention_heads=heads, attention_head_dim=8, in_channels=4, out_channels=4,
                          text_dim=12, freq_dim=8, ffn_dim=24, num_layers=2, image_dim=image_dim,
                          added_kv_proj_dim=heads * 8 if image_dim is not None else None)
    return WanTransformer3DModel(config).eval()


def _inputs(shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(*shape, generator=g)
    timestep = torch.tensor([700.0, 700.0])  # a CFG pair: one timestep, two text rows
    text = torch.randn(shape[0], 5, 12, generator=g)
    return latents, timestep, text


def _worker(rank: int, port: int, out_path: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=60))
    try:
        results: dict[str, object] = {}
        sp = SequenceParallel.from_process_group()
        model = _tiny_dit()
        with torch.no_grad():
            # all-to-all round trip, and seq_to_heads against the global tensor sliced by hand
            g = torch.Generator().manual_seed(2)
            full = torch.randn(2, 7, 4, 3, generator=g)  # 7 tokens, 4 heads
            shard = sp.plan(7)
            local = shard.scatter(full)
            heads = shard.seq_to_heads(local)
            padded = torch.nn.functional.pad(full, (0, 0, 0, 0, 0, 1))
            results["a2a_heads_exact"] = torch.equal(heads, padded[:, :, 2 * rank:2 * rank + 2])
            results["a2a_round_trip_exact"] = torch.equal(shard.heads_to_seq(heads), local)
            results["gather_exact"] = torch.equal(shard.gather(local), full)

            for name, shape in CASES.items():
                latents, timestep, text = _inputs(shape)
                model.set_sequence_parallel(None)
                alone = model(latents, timestep, text) if rank == 0 else None
                model.set_sequence_parallel(sp)
                shared = model(latents, timestep, text)
                step = model.embed(latents, timestep, text)
                row1 = model.run_blocks(step, torch.tensor([1]))
                gathered = [torch.empty_like(shared) for _ in range(WORLD)]
                dist.all_gather(gathered, shared)
                if rank == 0:
                    assert alone is not None
                    model.set_sequence_parallel(None)
                    row1_alone = model.run_blocks(model.embed(latents, timestep, text), torch.tensor([1]))
                    results[name] = {
                        "max_abs_diff": (shared - alone).abs().max().item(),
                        "ranks_identical": torch.equal(gathered[0], gathered[1]),
                        "row_max_abs_diff": (row1 - row1_alone).abs().max().item(),
                        "output_abs_max": alone.abs().max().item(),
                    }

            # the fused-ops path (torch reference ops) under SP
            from fastvideo.kernels.fused import select_ops_backend

            model.set_ops_backend(select_ops_backend("torch", dtype=torch.float32, device="cpu"))
            latents, timestep, text = _inputs(CASES["uneven_9_tokens"])
            model.set_sequence_parallel(sp)
            shared = model(latents, timestep, text)
            if rank == 0:
                model.set_sequence_parallel(None)
                results["fused_ops_uneven_max_abs_diff"] = (shared - model(latents, timestep, text)).abs().max().item()

            # image-to-video: the added image cross-attention stays local like the text one
            i2v = _tiny_dit(image_dim=6)
            latents, timestep, text = _inputs(CASES["uneven_9_tokens"])
            image = torch.randn(2, 3, 6, generator=torch.Generator().manual_seed(3))
            i2v.set_sequence_parallel(sp)
            shared = i2v(latents, timestep, text, image)
            if rank == 0:
                i2v.set_sequence_parallel(None)
                results["i2v_uneven_max_abs_diff"] = (shared - i2v(latents, timestep, text, image)).abs().max().item()

            # per-token timesteps (Wan2.2 TI2V: first frame's 3 tokens at 0): the (B, L, 6, D) modulation is
            # sharded with its tokens (9 tokens: rank 1 holds a pad token)
            latents, _, text = _inputs(CASES["uneven_9_tokens"])
            per_token = torch.full((1, 9), 700.0)
            per_token[:, :3] = 0.0
            model.set_ops_backend(None)
            model.set_sequence_parallel(sp)
            shared = model(latents, per_token, text)
            row1 = model.run_blocks(model.embed(latents, per_token, text), torch.tensor([1]))
            if rank == 0:
                model.set_sequence_parallel(None)
                alone = model(latents, per_token, text)
                row1_alone = model.run_blocks(model.embed(latents, per_token, text), torch.tensor([1]))
                results["per_token_uneven_max_abs_diff"] = max((shared - alone).abs().max().item(),
                                                               (row1 - row1_alone).abs().max().item())

            # 3 heads on 2 ranks: refused by default, exact through the K/V all-gather fallback
            odd = _tiny_dit(heads=3)
            latents, timestep, text = _inputs(CASES["uneven_9_tokens"])
            odd.set_sequence_parallel(SequenceParallel.from_process_group(kv_gather_fallback=True))
            shared = odd(latents, timestep, text)
            if rank == 0:
                odd.set_sequence_parallel(None)
                results["kv_gather_3_heads_max_abs_diff"] = (shared - odd(latents, timestep, text)).abs().max().item()
        if rank == 0:
            torch.save(results, out_path)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def sp_results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("sp") / "results.pt"
    context = mp.start_processes(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=False,
                                 start_method="spawn")
    deadline = time.monotonic() + 120
    try:
        while not context.join(timeout=1):
            if time.monotonic() > deadline:
                pytest.fail("the 2-rank gloo run did not finish within 120 s")
    finally:
        for proc in context.processes:
            if proc.is_alive():
                proc.kill()
    return torch.load(out)


def test_all_to_all_round_trip_and_gather_are_exact(sp_results: dict) -> None:
    assert sp_results["a2a_heads_exact"] is True
    assert sp_results["a2a_round_trip_exact"] is True
    assert sp_results["gather_exact"] is True


@pytest.mark.parametrize("case", list(CASES))
def test_two_ranks_equal_one_process(sp_results: dict, case: str) -> None:
    figures = sp_results[case]
    print(f"SP=2 vs 1, {case}: {figures}")
    assert figures["output_abs_max"] > 0.1  # a real output, not zeros
    assert figures["max_abs_diff"] <= TOLERANCE
    assert figures["row_max_abs_diff"] <= TOLERANCE
    assert figures["ranks_identical"] is True


def test_two_ranks_equal_one_process_with_fused_ops(sp_results: dict) -> None:
    print(f"SP=2 vs 1, fused torch ops, 9 tokens: {sp_results['fused_ops_uneven_max_abs_diff']}")
    assert sp_results["fused_ops_uneven_max_abs_diff"] <= TOLERANCE


def test_two_ranks_equal_one_process_image_to_video(sp_results: dict) -> None:
    print(f"SP=2 vs 1, image-to-video, 9 tokens: {sp_results['i2v_uneven_max_abs_diff']}")
    assert sp_results["i2v_uneven_max_abs_diff"] <= TOLERANCE


def test_two_ranks_equal_one_process_per_token_timesteps(sp_results: dict) -> None:
    print(f"SP=2 vs 1, per-token timesteps, 9 tokens: {sp_results['per_token_uneven_max_abs_diff']}")
    assert sp_results["per_token_uneven_max_abs_diff"] <= TOLERANCE


def test_heads_not_divisible_by_ranks_run_exactly_with_the_kv_gather_fallback(sp_results: dict) -> None:
    print(f"SP=2 vs 1, 3 heads through the K/V all-gather fallback, 9 tokens: "
          f"{sp_results['kv_gather_3_heads_max_abs_diff']}")
    assert sp_results["kv_gather_3_heads_max_abs_diff"] <= TOLERANCE


def test_heads_not_divisible_by_ranks_is_refused() -> None:
    model = _tiny_dit(heads=3)
    with pytest.raises(SequenceParallelError, match=r"3 heads are not divisible by sp_size=2") as info:
        model.set_sequence_parallel(SequenceParallel(world_size=2, rank=0))
    assert isinstance(info.value, FastVideoError)
    assert model.sequence_parallel is None


def test_from_process_group_needs_an_initialised_group() -> None:
    if dist.is_initialized():  # pragma: no cover - nothing in the suite initialises one in-process
        pytest.skip("a process group is already initialised in this process")
    with pytest.raises(SequenceParallelError, match="init_process_group"):
        SequenceParallel.from_process_group()


def test_a_single_rank_runs_alone() -> None:
    model = _tiny_dit()
    model.set_sequence_parallel(SequenceParallel(world_size=1, rank=0))
    assert model.sequence_parallel is None
