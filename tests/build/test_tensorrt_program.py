"""TensorRTProgram's call contract, against a stand-in ``tensorrt`` module (no TensorRT on CPU machines):
an input shape the engine's optimization profile rejects raises EngineShapeError naming the input, the
shape and the profile, before any input is moved or any work is enqueued."""

from __future__ import annotations

import sys
import threading
import time
import types
from pathlib import Path

import pytest
import torch

from fastvideo.api import FastVideoError
from fastvideo.build.tensorrt import EngineShapeError, TensorRTProgram

PROFILE = {"hidden_states": ((1, 16, 2, 8, 8), (2, 16, 2, 8, 8), (2, 16, 2, 8, 8)),
           "timestep": ((1,), (2,), (2,))}


class FakeContext:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.executed = False
        self.inside = self.most_inside = 0
        self.delay_s = 0.0

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self.inside += 1
        self.most_inside = max(self.most_inside, self.inside)
        time.sleep(self.delay_s)
        self.inside -= 1
        low, _, high = PROFILE[name]
        if len(shape) != len(low) or any(not lo <= s <= hi for s, lo, hi in zip(shape, low, high)):
            return False  # what TensorRT does: no exception, a False return
        self.shapes[name] = shape
        return True

    def set_tensor_address(self, name: str, address: int) -> None:
        raise AssertionError("no address may be set for a refused shape")

    def execute_async_v3(self, stream: int) -> bool:
        self.executed = True
        return True


class FakeEngine:
    num_io_tensors = 3

    def __init__(self) -> None:
        self.context = FakeContext()

    def create_execution_context(self) -> FakeContext:
        return self.context

    def get_tensor_name(self, index: int) -> str:
        return ["hidden_states", "timestep", "out"][index]

    def get_tensor_mode(self, name: str) -> str:
        return "input" if name != "out" else "output"

    def get_tensor_dtype(self, name: str) -> str:
        return "float"

    def get_tensor_profile_shape(self, name: str, profile: int) -> tuple:
        assert profile == 0
        return PROFILE[name]


@pytest.fixture
def program(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> TensorRTProgram:
    engine = FakeEngine()
    trt = types.SimpleNamespace(
        Logger=type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None}),
        Runtime=lambda logger: types.SimpleNamespace(deserialize_cuda_engine=lambda data: engine),
        TensorIOMode=types.SimpleNamespace(INPUT="input"),
        DataType=types.SimpleNamespace(FLOAT="float", HALF="half", INT32="int32", BOOL="bool", INT8="int8"))
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    path = tmp_path / "dit.engine"
    path.write_bytes(b"engine")
    return TensorRTProgram(path, torch.device("cuda"), ("hidden_states", "timestep"))


def test_shape_outside_the_profile_is_refused_with_the_profile(program: TensorRTProgram) -> None:
    latents, timestep = torch.zeros(3, 16, 2, 8, 8), torch.zeros(3)
    with pytest.raises(EngineShapeError) as info:
        program(latents, timestep)
    message = str(info.value)
    assert "'hidden_states' has shape (3, 16, 2, 8, 8)" in message
    assert "min (1, 16, 2, 8, 8), opt (2, 16, 2, 8, 8), max (2, 16, 2, 8, 8)" in message
    assert "--profile" in message
    assert isinstance(info.value, FastVideoError) and not program._context.executed


def test_wrong_input_count_is_refused(program: TensorRTProgram) -> None:
    with pytest.raises(EngineShapeError, match="takes 2 inputs"):
        program(torch.zeros(2, 16, 2, 8, 8))


def test_profile_reads_the_engine(program: TensorRTProgram) -> None:
    assert program.profile("timestep") == ((1,), (2,), (2,))


def test_callers_on_different_threads_take_turns_on_the_one_execution_context(program: TensorRTProgram) -> None:
    """The decode stage and a preview decode share a VAE engine from two threads: one context holds one set of
    shapes, so their calls must not interleave (here each call then fails for lack of CUDA, after its shapes)."""
    context = program._context
    context.delay_s = 0.02

    def call() -> None:
        for _ in range(3):
            with pytest.raises(Exception):  # no CUDA here: the call fails after setting its shapes
                program(torch.zeros(2, 16, 2, 8, 8), torch.zeros(2))

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert context.most_inside == 1, "two callers set shapes on the one execution context at once"
