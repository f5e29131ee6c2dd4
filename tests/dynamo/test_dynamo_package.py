"""The Dynamo worker package: public-surface-only imports, CLI -> GeneratorConfig, cheap import."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import fastvideo.serving.dynamo as package
from fastvideo.api import GeneratorConfig
from fastvideo.serving.dynamo.args import BUILTIN_MODEL_NAME, build_generator_config, parse_args

PACKAGE_DIR = Path(package.__file__).parent
#: What the worker may import: public FastVideo, its own package, Dynamo, fsspec, the stdlib.
PUBLIC_FASTVIDEO = {"fastvideo", "fastvideo.api"}
OWN_PACKAGE = "fastvideo.serving.dynamo"
THIRD_PARTY = {"dynamo", "fsspec"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise AssertionError(f"{path.name}: use absolute imports (relative import at line {node.lineno})")
            assert node.module
            names.add(node.module)
    return names


def test_worker_imports_only_public_fastvideo_dynamo_fsspec_and_stdlib():
    files = sorted(PACKAGE_DIR.glob("*.py"))
    assert {f.name for f in files} >= {"__init__.py", "__main__.py", "args.py", "protocol.py", "handler.py",
                                       "health.py", "register.py", "main.py"}
    bad: dict[str, list[str]] = {}
    for path in files:
        for name in _imports(path):
            top = name.split(".")[0]
            ok = (name in PUBLIC_FASTVIDEO or name == OWN_PACKAGE or name.startswith(OWN_PACKAGE + ".")
                  or top in THIRD_PARTY or top in sys.stdlib_module_names or name == "__future__")
            if not ok:
                bad.setdefault(path.name, []).append(name)
    assert not bad, f"non-public imports in the Dynamo worker: {bad}"


def test_every_module_opens_with_a_contract_docstring():
    for path in PACKAGE_DIR.glob("*.py"):
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert doc, f"{path.name} has no module docstring"
        assert len(path.read_text().splitlines()) <= 800


def test_importing_the_package_imports_neither_dynamo_nor_torch():
    code = ("import sys, fastvideo.serving.dynamo.handler, fastvideo.serving.dynamo.args, "
            "fastvideo.serving.dynamo.protocol; "
            "print(sorted(m for m in ('torch', 'dynamo') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cli_maps_to_a_typed_generator_config(monkeypatch):
    monkeypatch.delenv("DYN_DISCOVERY_BACKEND", raising=False)
    args = parse_args(["--model-path", "~/models/Wan2.1-T2V-1.3B-Diffusers", "--dtype", "bf16", "--device", "cuda:1",
                       "--attention-backend", "triton", "--compile", "--compile-mode", "max-autotune-no-cudagraphs",
                       "--dit-offload", "--text-encoder-offload", "--vae-offload", "--no-pin-cpu-memory",
                       "--tp-size", "2", "--num-gpus", "2", "--preset", "wan2.1-t2v-1.3b",
                       "--media-output-fs-url", "s3://bucket/videos"])
    config = build_generator_config(args)
    assert isinstance(config, GeneratorConfig)
    assert config.model_path.endswith("models/Wan2.1-T2V-1.3B-Diffusers") and not config.model_path.startswith("~")
    e = config.engine
    assert (e.dtype, e.device, e.attention_backend, e.num_gpus, e.parallelism.tp_size) == ("bf16", "cuda:1",
                                                                                            "triton", 2, 2)
    assert e.compile.enabled and e.compile.mode == "max-autotune-no-cudagraphs"
    assert not e.cuda_graphs.enabled
    graphs = build_generator_config(parse_args(["--cuda-graphs", "832x480x81"])).engine.cuda_graphs
    assert graphs.enabled and graphs.sizes == ["832x480x81"]
    assert build_generator_config(parse_args(["--cuda-graphs"])).engine.cuda_graphs.sizes == []
    assert e.offload.dit and e.offload.text_encoder and e.offload.vae and not e.offload.pin_cpu_memory
    assert config.pipeline.preset == "wan2.1-t2v-1.3b"
    assert args.served_name == "Wan2.1-T2V-1.3B-Diffusers" and args.discovery_backend == "etcd"
    assert args.endpoint_path == "dynamo.fastvideo.generate"


def test_defaults_and_env(monkeypatch):
    monkeypatch.setenv("DYN_DISCOVERY_BACKEND", "file")
    monkeypatch.setenv("DYN_NAMESPACE", "videos")
    args = parse_args([])
    assert args.model_path is None and args.served_name == BUILTIN_MODEL_NAME
    assert (args.discovery_backend, args.request_plane, args.namespace) == ("file", "tcp", "videos")
    assert build_generator_config(args).model_path is None
    assert parse_args(["--served-model-name", "wan"]).served_name == "wan"


@pytest.mark.parametrize("argv", [["--tp-size", "0"], ["--media-output-fs-url", "/tmp/x"], ["--dtype", "int4"],
                                  ["--discovery-backend", "zookeeper"], ["--default-fps", "0"]])
def test_bad_flags_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as info:
        parse_args(argv)
    assert info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_help_works_without_dynamo():
    out = subprocess.run([sys.executable, "-m", "fastvideo.serving.dynamo", "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert "--media-output-fs-url" in out and "--discovery-backend" in out
