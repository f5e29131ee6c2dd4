"""Worker command line -> typed :class:`WorkerArgs` -> :class:`fastvideo.api.GeneratorConfig`.

Contract: ``parse_args(argv)`` returns a frozen :class:`WorkerArgs` (every flag has a typed home;
Dynamo runtime flags default from the same ``DYN_*`` environment variables Dynamo's own workers
read, e.g. ``DYN_DISCOVERY_BACKEND``, ``DYN_REQUEST_PLANE``, ``DYN_NAMESPACE``); bad flags exit with
status 2 and argparse's one-line message. ``build_generator_config(args)`` builds the engine config
from public ``fastvideo.api`` types only, never flat legacy kwargs (``--variant`` is ``pipeline.variant``, as
``fastvideo serve --variant``; a bad name is refused when the generator is built). ``--devices 0,1`` (CUDA indices,
``cuda:N``, or ``cpu,cpu``) serves one worker per device behind this one Dynamo instance:
``build_pool_config(args)`` is the :class:`fastvideo.PoolConfig` (None without ``--devices``); the
first device is the engine's ``--device`` (set to it, or it must match), and ``--no-warmup`` is
refused with it (every pool worker warms up when it boots). Whether the devices exist is checked
when the worker starts. Nothing here imports Dynamo or torch, so ``--help`` works everywhere.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Sequence

from fastvideo import PoolConfig
from fastvideo.api import (
    CompileConfig,
    ConfigError,
    CudaGraphsConfig,
    EngineConfig,
    GeneratorConfig,
    OffloadConfig,
    ParallelismConfig,
    PipelineSelection,
)

DEFAULT_NAMESPACE = "dynamo"
DEFAULT_COMPONENT = "fastvideo"
DEFAULT_ENDPOINT = "generate"
#: Served name when no ``--model-path`` is given (the built-in tiny model).
BUILTIN_MODEL_NAME = "fastvideo-tiny"
DEFAULT_MEDIA_FS_URL = "file:///tmp/dynamo_media"


@dataclass(frozen=True)
class WorkerArgs:
    """Everything one FastVideo Dynamo worker needs (engine + Dynamo runtime + media output)."""

    # model / engine
    model_path: str | None = None
    served_model_name: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    attention_backend: str | None = None
    num_gpus: int = 1
    tp_size: int = 1
    sp_size: int = 1
    compile: bool = False
    compile_mode: str | None = None
    compile_backend: str = "inductor"
    compile_fullgraph: bool = False
    cuda_graphs: list[str] | None = None
    #: One pool worker per device (normalized: ``cuda:N`` / ``cpu``); None: one engine on ``device``.
    devices: list[str] | None = None
    dit_offload: bool = False
    dit_layerwise_offload: bool = False
    text_encoder_offload: bool = False
    image_encoder_offload: bool = False
    vae_offload: bool = False
    pin_cpu_memory: bool = True
    preset: str | None = None
    #: Weight variant to load (``pipeline.variant``: ``fp16`` reads ``*.fp16.safetensors``); None: the plain files.
    variant: str | None = None
    workload_type: str = "t2v"
    warmup: bool = True
    # request defaults
    default_fps: int | None = None
    default_response_format: str = "url"
    # media output
    media_output_fs_url: str = DEFAULT_MEDIA_FS_URL
    media_output_http_url: str | None = None
    # dynamo runtime
    namespace: str = DEFAULT_NAMESPACE
    component: str = DEFAULT_COMPONENT
    endpoint: str = DEFAULT_ENDPOINT
    discovery_backend: str = "etcd"
    request_plane: str = "tcp"
    event_plane: str | None = None
    response_plane: str = "tcp"
    graceful_shutdown_grace_s: float = 1.0
    health_probe_interval_s: float = 30.0
    health_stall_timeout_s: float = 300.0
    dump_config_to: str | None = None
    log_level: str = "INFO"

    @property
    def served_name(self) -> str:
        """The model name clients put in ``"model"`` (and ``/v1/models`` lists)."""
        if self.served_model_name:
            return self.served_model_name
        if self.model_path:
            return os.path.basename(os.path.normpath(os.path.expanduser(self.model_path))) or self.model_path
        return BUILTIN_MODEL_NAME

    @property
    def endpoint_path(self) -> str:
        return f"{self.namespace}.{self.component}.{self.endpoint}"


def _env(name: str, default: str | None) -> str | None:
    value = os.environ.get(name)
    return value if value else default


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fastvideo.serving.dynamo",
        description="FastVideo video-generation worker for NVIDIA Dynamo (serves POST /v1/videos through "
                    "`python -m dynamo.frontend`). Without --model-path it serves the built-in tiny model.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    model = parser.add_argument_group("model and engine")
    model.add_argument("--model-path", default=None, help="local diffusers-format model folder (default: built-in)")
    model.add_argument("--served-model-name", default=None,
                       help=f"name clients send as \"model\" (default: the folder name, or {BUILTIN_MODEL_NAME!r})")
    model.add_argument("--device", default="auto", help="'auto' (cuda if available, else cpu), 'cpu', 'cuda:0', ...")
    model.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"],
                       help="model precision; auto is bf16 on GPU and fp32 on CPU")
    model.add_argument("--attention-backend", default=None,
                       help="sdpa, triton or flash_attn (default: FASTVIDEO_ATTENTION_BACKEND, else sdpa)")
    model.add_argument("--num-gpus", type=int, default=1)
    model.add_argument("--tp-size", type=int, default=1, help="tensor-parallel degree")
    model.add_argument("--sp-size", type=int, default=1, help="sequence-parallel degree")
    model.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                       help="torch.compile the DiT")
    model.add_argument("--compile-mode", default=None, help="torch.compile mode (e.g. max-autotune-no-cudagraphs)")
    model.add_argument("--compile-backend", default="inductor")
    model.add_argument("--compile-fullgraph", action="store_true")
    model.add_argument("--cuda-graphs", nargs="*", default=None, metavar="WxHxF",
                       help="capture the DiT step as CUDA graphs for these sizes when the worker starts (no size: "
                            "the model's default size); other sizes run eagerly. CUDA only")
    model.add_argument("--devices", default=None, metavar="LIST",
                       help="serve on several devices, one worker each, behind this one Dynamo instance: CUDA "
                            "indices such as 0,1 (or cuda:0,cuda:1), or cpu,cpu; the first runs in this process, "
                            "the others in their own processes (default: one engine on --device)")
    model.add_argument("--dit-offload", action="store_true", help="keep the DiT on CPU between uses")
    model.add_argument("--dit-layerwise-offload", action="store_true")
    model.add_argument("--text-encoder-offload", action="store_true")
    model.add_argument("--image-encoder-offload", action="store_true")
    model.add_argument("--vae-offload", action="store_true")
    model.add_argument("--no-pin-cpu-memory", dest="pin_cpu_memory", action="store_false")
    model.add_argument("--preset", default=None, help="model preset name (default: inferred from the folder)")
    model.add_argument("--variant", default=None,
                       help="weight variant to load, e.g. fp16 for *.fp16.safetensors (pipeline.variant; default: "
                            "the plain files, else a component's only variant), as `fastvideo serve --variant`")
    model.add_argument("--workload-type", default="t2v")
    model.add_argument("--warmup", action=argparse.BooleanOptionalAction, default=True,
                       help="run the health-check request once before registering (first requests are not slow)")
    req = parser.add_argument_group("request defaults")
    req.add_argument("--default-fps", type=int, default=None,
                     help="fps used for seconds*fps when a request has no nvext.fps (default: the model preset's)")
    req.add_argument("--default-response-format", default="url", choices=["url", "b64_json"],
                     help="response_format when a request has none (Dynamo's convention is url)")
    media = parser.add_argument_group("media output (response_format=url)")
    media.add_argument("--media-output-fs-url", default=_env("DYN_MEDIA_OUTPUT_FS_URL", DEFAULT_MEDIA_FS_URL),
                       help="fsspec URL of the folder MP4s are written to (file:///dir, s3://bucket/prefix, ...)")
    media.add_argument("--media-output-http-url", default=_env("DYN_MEDIA_OUTPUT_HTTP_URL", None),
                       help="public base URL of that folder; returned URLs become {base}/{request id}.mp4")
    dyn = parser.add_argument_group("dynamo runtime")
    dyn.add_argument("--namespace", default=_env("DYN_NAMESPACE", DEFAULT_NAMESPACE))
    dyn.add_argument("--component", default=DEFAULT_COMPONENT)
    dyn.add_argument("--endpoint", default=DEFAULT_ENDPOINT)
    dyn.add_argument("--discovery-backend", default=_env("DYN_DISCOVERY_BACKEND", "etcd"),
                     choices=["kubernetes", "etcd", "file", "mem"],
                     help="must match the frontend's; 'file' needs no etcd (root dir: DYN_FILE_KV)")
    dyn.add_argument("--request-plane", default=_env("DYN_REQUEST_PLANE", "tcp"), choices=["tcp", "nats"])
    dyn.add_argument("--event-plane", default=_env("DYN_EVENT_PLANE", None), choices=["nats", "zmq"])
    dyn.add_argument("--response-plane", default=_env("DYN_RESPONSE_PLANE", "tcp"), choices=["tcp", "quic"])
    dyn.add_argument("--graceful-shutdown-grace-s", type=float,
                     default=float(_env("DYN_GRACEFUL_SHUTDOWN_GRACE_PERIOD_SECS", "1.0") or 1.0),
                     help="seconds between unregistering from discovery and stopping on SIGTERM/SIGINT")
    dyn.add_argument("--health-probe-interval-s", type=float, default=30.0,
                     help="Dynamo's health canary runs its payload in the background when no generation "
                          "succeeded for this long (the canary itself is answered at once)")
    dyn.add_argument("--health-stall-timeout-s", type=float, default=300.0,
                     help="a generation with no denoising step for this long fails Dynamo's health canary")
    dyn.add_argument("--dump-config-to", default=None, help="write the resolved worker + engine config as JSON")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def _canonical_device(name: str) -> str:
    """``cuda`` / ``0`` -> ``cuda:0`` as ``--devices`` writes it (the name itself when it is no such device)."""
    try:
        return str(PoolConfig(devices=[name]).devices[0])
    except ConfigError:
        return name


def parse_args(argv: Sequence[str] | None = None) -> WorkerArgs:
    """Parse the worker's flags; exits with status 2 on a bad flag."""
    parser = build_parser()
    ns = parser.parse_args(argv)
    for flag in ("num_gpus", "tp_size", "sp_size"):
        if getattr(ns, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1")
    for flag in ("health_probe_interval_s", "health_stall_timeout_s"):
        if getattr(ns, flag) <= 0:
            parser.error(f"--{flag.replace('_', '-')} must be > 0")
    if ns.default_fps is not None and ns.default_fps < 1:
        parser.error("--default-fps must be >= 1")
    if "://" not in ns.media_output_fs_url:
        parser.error(f"--media-output-fs-url {ns.media_output_fs_url!r} is not a URL; use e.g. file:///tmp/videos")
    if ns.devices is not None:
        try:
            ns.devices = [str(d) for d in PoolConfig(devices=[d.strip() for d in ns.devices.split(",")]).devices]
        except ConfigError as exc:
            parser.error(f"--devices {ns.devices!r}: {exc}")
        if ns.device == "auto":
            ns.device = ns.devices[0]
        elif _canonical_device(ns.device) != ns.devices[0]:
            parser.error(f"--device {ns.device} is not the first of --devices {','.join(ns.devices)}: the first "
                         "device runs this process's engine; list it first or drop --device")
        if not ns.warmup:
            parser.error("--no-warmup cannot be used with --devices: every pool worker warms up when it boots")
    return WorkerArgs(**vars(ns))


def build_generator_config(args: WorkerArgs) -> GeneratorConfig:
    """The typed engine configuration the worker's flags describe."""
    return GeneratorConfig(
        model_path=os.path.expanduser(args.model_path) if args.model_path else None,
        engine=EngineConfig(
            num_gpus=args.num_gpus,
            parallelism=ParallelismConfig(tp_size=args.tp_size, sp_size=args.sp_size),
            offload=OffloadConfig(dit=args.dit_offload, dit_layerwise=args.dit_layerwise_offload,
                                  text_encoder=args.text_encoder_offload, image_encoder=args.image_encoder_offload,
                                  vae=args.vae_offload, pin_cpu_memory=args.pin_cpu_memory),
            compile=CompileConfig(enabled=args.compile, backend=args.compile_backend,
                                  fullgraph=args.compile_fullgraph, mode=args.compile_mode),
            device=args.device,
            dtype=args.dtype,  # type: ignore[arg-type]  # argparse choices match DType
            attention_backend=args.attention_backend,
            cuda_graphs=CudaGraphsConfig(enabled=args.cuda_graphs is not None, sizes=list(args.cuda_graphs or [])),
        ),
        pipeline=PipelineSelection(workload_type=args.workload_type,  # type: ignore[arg-type]  # refused unless t2v
                                   preset=args.preset, variant=args.variant),
    )


def build_pool_config(args: WorkerArgs) -> PoolConfig | None:
    """The device pool ``--devices`` asks for (None: one engine on ``--device``)."""
    return PoolConfig(devices=list(args.devices)) if args.devices else None
