"""Built programs compute what eager PyTorch computes.

- AOTInductor: the ``.pt2`` packages of the tiny model (weights bound from the eager model) against
  the eager DiT (batch 1 and 2: the batch axis is dynamic) and VAE decoder.
- ONNX: the DiT and VAE decoder files of the tensorrt build's ONNX stage, run by onnxruntime on
  the CPU, against eager.

Inputs are fresh (another seed and timestep than the build verified with). Tolerance (fp32):
``|compiled - eager| <= 1e-4 + 1e-4 * |eager|`` elementwise; the builds measured ~1e-5 (DiT) and
~4e-5 (VAE decoder, outputs in [-1, 1]).
"""

from __future__ import annotations

import pytest
import torch

from build_helpers import LATENT, CliRun
from fastvideo.build.exportable import DiTExport, VAEDecodeExport
from fastvideo.build.specs import LatentShape, ShapeCase

KEY = f"f{LATENT[0]}h{LATENT[1]}w{LATENT[2]}"
ATOL = RTOL = 1e-4


def _case(folder, key: str) -> ShapeCase:
    from fastvideo.build import manifest as mf

    data = mf.read_manifest(folder).case(key)
    assert data is not None, key
    return ShapeCase.from_dict(data)


def _dit_inputs(build_models, batch: int, seed: int) -> tuple[torch.Tensor, ...]:
    cfg = build_models.dit.config
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, cfg.in_channels, *LATENT, generator=g)
    t = torch.tensor([937.0, 121.0][:batch])
    text = torch.randn(batch, 64, cfg.text_dim, generator=g)  # the tiny preset's text length
    return x, t, text


def _latents(build_models, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, build_models.vae.config.z_dim, *LATENT, generator=g)


def test_aoti_dit_package_matches_eager(aoti_build: CliRun, build_models) -> None:
    from fastvideo.build.aoti import AOTIProgram

    case = _case(aoti_build.folder, f"dit-{KEY}")
    assert case.batches == (1, 2)
    owner = DiTExport(build_models.dit, LatentShape(*LATENT), "cpu").eval()
    program = AOTIProgram(aoti_build.folder / "aoti" / f"dit-{KEY}.pt2", torch.device("cpu"))
    program.bind(owner)
    for batch in (1, 2):
        inputs = _dit_inputs(build_models, batch, seed=11 + batch)
        with torch.no_grad():
            expected = build_models.dit(*inputs)
            got = program(*inputs)
        assert got.shape == expected.shape == (batch, 16, *LATENT)
        torch.testing.assert_close(got, expected, atol=ATOL, rtol=RTOL)
        assert expected.abs().max() > 0.1  # a real signal, not zeros


def test_aoti_package_uses_the_bound_weights(aoti_build: CliRun, build_models) -> None:
    """Packages hold no weights: binding other weights changes the output (so the digest check matters)."""
    import copy

    from fastvideo.build.aoti import AOTIProgram

    other = copy.deepcopy(build_models.dit)
    with torch.no_grad():
        other.proj_out.weight.mul_(2.0)
    program = AOTIProgram(aoti_build.folder / "aoti" / f"dit-{KEY}.pt2", torch.device("cpu"))
    program.bind(DiTExport(other, LatentShape(*LATENT), "cpu").eval())
    inputs = _dit_inputs(build_models, 1, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(program(*inputs), other(*inputs), atol=ATOL, rtol=RTOL)
        assert (program(*inputs) - build_models.dit(*inputs)).abs().max() > 1e-2


def test_aoti_vae_decoder_package_matches_eager(aoti_build: CliRun, build_models) -> None:
    from fastvideo.build.aoti import AOTIProgram

    program = AOTIProgram(aoti_build.folder / "aoti" / f"vae_decoder-{KEY}.pt2", torch.device("cpu"))
    program.bind(VAEDecodeExport(build_models.vae).eval())
    z = _latents(build_models, seed=21)
    with torch.no_grad():
        expected = build_models.vae.decode(z)
        got = program(z)
    assert got.shape == expected.shape == (1, 3, 5, 64, 64)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=RTOL)


def _ort(path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_onnx_dit_matches_eager_in_onnxruntime(onnx_build: CliRun, build_models) -> None:
    folder = onnx_build.folder
    session = _ort(folder / "onnx" / f"dit-{KEY}.onnx")
    assert [i.name for i in session.get_inputs()] == ["hidden_states", "timestep", "encoder_hidden_states"]
    assert [o.name for o in session.get_outputs()] == ["noise_pred"]
    for batch in (1, 2):  # the batch axis is dynamic in the ONNX graph
        inputs = _dit_inputs(build_models, batch, seed=31 + batch)
        with torch.no_grad():
            expected = build_models.dit(*inputs)
        feeds = {name: t.numpy() for name, t in zip(("hidden_states", "timestep", "encoder_hidden_states"), inputs)}
        got = torch.from_numpy(session.run(None, feeds)[0])
        torch.testing.assert_close(got, expected, atol=ATOL, rtol=RTOL)


def test_onnx_vae_decoder_matches_eager_in_onnxruntime(onnx_build: CliRun, build_models) -> None:
    session = _ort(onnx_build.folder / "onnx" / f"vae_decoder-{KEY}.onnx")
    assert [i.name for i in session.get_inputs()] == ["latents"]
    z = _latents(build_models, seed=41)
    with torch.no_grad():
        expected = build_models.vae.decode(z)
    got = torch.from_numpy(session.run(None, {"latents": z.numpy()})[0])
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=RTOL)


def test_onnx_check_rejects_a_graph_that_differs(onnx_build: CliRun, build_models, tmp_path) -> None:
    """The builder's onnxruntime check is a real comparison: other weights fail it."""
    import copy

    from fastvideo.build.onnx_export import OnnxCheckError, check_onnx

    case = _case(onnx_build.folder, f"vae_decoder-{KEY}")
    other = copy.deepcopy(build_models.vae)
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(1.1)
    inputs = {1: case.sample_inputs(1, device="cpu", compute_dtype=torch.float32, vae_dtype=torch.float32)}
    with pytest.raises(OnnxCheckError, match="differs from eager PyTorch"):
        check_onnx(onnx_build.folder / "onnx" / f"vae_decoder-{KEY}.onnx", VAEDecodeExport(other).eval(), case,
                   inputs, torch.float32)
