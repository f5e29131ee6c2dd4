"""The ``fastvideo`` command line: ``generate``, ``serve``, ``router-serve``, ``bench`` and ``eval``.

Contract: every sub-command parses its flags into typed ``fastvideo.api`` / serving config objects
and calls the public runtime API; bad input exits with status 2 and a one-line message naming the
flag and the fix, never a traceback, and never leaves a partial output file; a model folder that
cannot be loaded (:class:`ModelLoadError`) exits 2 with one line, a generation that failed
(:class:`GenerationFailed`, e.g. non-finite latents) or any other FastVideoError exits 1 with one line.
Progress is shown on stderr. ``serve`` layers defaults < ``--config`` file < FastVideo-style dotted flags
(``--server.port 8001``) < explicit flags < dotted ``KEY=VALUE`` overrides (see
:mod:`fastvideo.serving.config`); a ``--a.b`` token (a dot in the flag's name) is a dotted override for
``generate`` and ``serve`` and refused by the other commands. ``generate --config`` runs every prompt of
a run config that holds several (a ``prompt`` list or ``inputs.prompt_path``): one video each.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import typing
from dataclasses import replace
from typing import Any, Sequence

from fastvideo.api import (
    ConfigError,
    FastVideoError,
    GenerationFailed,
    GenerationRequest,
    ModelLoadError,
    OutputConfig,
    RequestError,
    RunConfig,
    TranslatedRequest,
    apply_overrides,
    config_to_dict,
    load_raw_config,
    parse_cli_overrides,
    parse_config,
    translate_request,
)
from fastvideo.api.parse import literal_values
from fastvideo.api.presets import BUILTIN_MODEL_NAMES
from fastvideo.api.wire import FIELDS, FieldSpec
from fastvideo.envs import read_env
from fastvideo.serving.observability import StderrHandler

logger = logging.getLogger("fastvideo.cli")


def _setup_logging(verbose: bool) -> None:
    level = logging.DEBUG if verbose else getattr(logging, read_env().log_level, logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=[StderrHandler()])
    if not verbose:  # one INFO line per HTTP request from the clients (bench, router) drowns the report
        logging.getLogger("httpx").setLevel(logging.WARNING)


def add_generator_args(parser: argparse.ArgumentParser) -> None:
    """Flags that build a GeneratorConfig (shared by generate/serve)."""
    g = parser.add_argument_group("model")
    g.add_argument("--model-path", default=None,
                   help="local diffusers-format model folder (e.g. Wan2.1-T2V-1.3B-Diffusers), or a built-in "
                        f"model ({', '.join(BUILTIN_MODEL_NAMES)}); default: the built-in tiny model, "
                        "synthesized on first use")
    g.add_argument("--preset", default=None,
                   help="model preset giving defaults (wan2.1-t2v-1.3b, wan2.1-t2v-14b, fastvideo-tiny); "
                        "default: inferred from the model folder")
    g.add_argument("--device", default="auto", help="torch device: auto (cuda if present), cpu, cuda, cuda:1 ...")
    g.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"],
                   help="compute precision of DiT and text encoder (auto: bf16 on GPU, fp32 on CPU)")
    g.add_argument("--attention-backend", default=None,
                   help="sdpa, triton or flash_attn (default: $FASTVIDEO_ATTENTION_BACKEND, else sdpa)")
    g.add_argument("--ops-backend", default=None, choices=["triton", "torch"],
                   help="fused DiT ops (norms, AdaLN modulation, RoPE, gated residual): triton kernels, or "
                        "torch for their references (default: $FASTVIDEO_OPS_BACKEND, else the eager model code)")
    g.add_argument("--variant", default=None,
                   help="weight variant to load, e.g. fp16 for *.fp16.safetensors (pipeline.variant; default: the "
                        "plain files, else a component's only variant)")
    g.add_argument("--compile", action="store_true", help="torch.compile the DiT")


def generator_flags(args: argparse.Namespace) -> dict[str, object]:
    """The GeneratorConfig values the user gave as flags, by dotted path (unset flags are left out)."""
    given = {"model_path": args.model_path, "engine.device": args.device, "engine.dtype": args.dtype,
             "engine.attention_backend": args.attention_backend, "engine.ops_backend": args.ops_backend,
             "engine.compile.enabled": True if args.compile else None, "pipeline.preset": args.preset,
             "pipeline.variant": args.variant}
    return {path: value for path, value in given.items() if value is not None}


#: Which models take ``--image``. The model registry has no "takes an image" entry to build this from (LTX-2's
#: presets are text-to-video ones whose family also takes an optional first frame), so it is said here; the
#: engine's request checks (fastvideo.engine.request_support) are what enforce it.
IMAGE_HELP = ("first frame (request.inputs.image_path). Required by Wan2.1 image-to-video folders (I2V 14B 480p / "
              "720p, FLF2V 14B; built-in: fastvideo-tiny-i2v) and Wan2.2 I2V A14B; optional for Wan2.2 TI2V-5B / "
              "FastWan2.2 TI2V-5B (built-in: fastvideo-tiny-ti2v) and LTX-2, whose image-to-video starts the video "
              "from it (built-in: fastvideo-tiny-ltx2); refused by text-to-video models")


def _build_generate_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("generate", help="generate one video to an MP4 file",
                       description="Generate a video from a text prompt and write it as an H.264 MP4. "
                                   "Unset sampling options take the model preset's defaults. A run config "
                                   "(--config run.yaml: generator + request, as FastVideo's RunConfig) may give "
                                   "everything; then dotted overrides such as --request.sampling.seed 3 or "
                                   "--generator.engine.dtype bf16 change it, and the flags below win over both.")
    _add_request_flags(p, p.add_argument_group("sampling (default: the preset's)"))
    p.add_argument("--config", default=None, metavar="RUN.yaml",
                   help="a YAML/JSON run config with 'generator' and 'request' sections (fastvideo.api.RunConfig)")
    p.add_argument("--output", default=None,
                   help="output .mp4 path, or a folder (file named after the request id); default: the run config's "
                        "request.output.output_path, else outputs/video.mp4")
    i = p.add_argument_group("image-to-video (Wan2.1 I2V / FLF2V, Wan2.2 I2V A14B / TI2V-5B, LTX-2)")
    i.add_argument("--image", default=None, metavar="PATH", help=IMAGE_HELP)
    i.add_argument("--last-image", default=None, metavar="PATH",
                   help="last frame, for Wan2.1 first-last-frame (FLF2V) models, required there and refused by the "
                        "others (request.inputs.last_image)")
    add_generator_args(p)
    p.add_argument("--json", action="store_true", help="print the result metadata as JSON on stdout")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.set_defaults(func=cmd_generate, device=None, dtype=None, accepts_dotted_overrides=True)
    return p


#: What the CLI adds to a field's help (the wire table's help says what the field means on every edge).
_CLI_NOTES = {"prompt": " (required without --config)"}
#: Metavar by value type, where argparse's default (the flag's name in capitals) would not show the format.
_METAVARS = {"int_list": "N1,N2,..."}


def _flag_dest(spec: FieldSpec) -> str:
    assert spec.flag is not None
    return spec.flag[2:].replace("-", "_")


def _literal_choices(path: str) -> list[str] | None:
    """The values a ``Literal`` field of :class:`GenerationRequest` allows (e.g. ``sampling.sampler``), else None."""
    hint: Any = GenerationRequest
    for part in path.split("."):
        if not isinstance(hint, type):
            return None
        hint = typing.get_type_hints(hint).get(part)
    return [str(value) for value in literal_values(hint)] or None


def _add_request_flags(top: Any, sampling: Any) -> None:
    """One flag per field of the wire table (:data:`fastvideo.api.wire.FIELDS`) that has one, with its help:
    ``sampling.*`` fields in the ``sampling`` group, the others in ``top``; ``--<short>`` is an alias where the
    flag is shorter (``--steps`` / ``--num-inference-steps``)."""
    for spec in FIELDS:
        if spec.flag is None:
            continue
        names = [spec.flag]
        long = f"--{spec.short.replace('_', '-')}"
        if long != spec.flag:
            names.append(long)
        group = sampling if spec.path.startswith("sampling.") else top
        group.add_argument(*names, dest=_flag_dest(spec), default=None, choices=_literal_choices(spec.path),
                           metavar=_METAVARS.get(spec.kind), help=spec.help + _CLI_NOTES.get(spec.path, ""))


def _request_flags(args: argparse.Namespace) -> dict[str, object]:
    """The request flags the user set, keyed by the flag as the wire table names it (``--steps``)."""
    given = {spec.flag: getattr(args, _flag_dest(spec)) for spec in FIELDS if spec.flag is not None}
    return {flag: value for flag, value in given.items() if value is not None}


#: Where ``fastvideo generate``'s dotted overrides may point (as in FastVideo's CLI).
RUN_OVERRIDE_PREFIXES = ("generator.", "request.")


def _run_request(args: argparse.Namespace) -> tuple[TranslatedRequest, dict[str, Any]]:
    """The request and the generator config of ``fastvideo generate``: the run config (file + dotted overrides),
    then the flags; translated and type-checked before any model loads."""
    overrides = parse_cli_overrides(args.dotted_overrides) if args.dotted_overrides else {}
    for key in overrides:
        if not key.startswith(RUN_OVERRIDE_PREFIXES) or "." not in key:
            raise ConfigError(key, "unsupported override path; use --generator.<field> or --request.<field> "
                                   "(e.g. --request.sampling.seed 3)")
    if overrides and args.config is None:
        raise ConfigError("config", "dotted overrides change a run config: give --config RUN.yaml too")
    flags = _request_flags(args)
    output = OutputConfig(save_video=True, return_frames=False, output_path=args.output or "outputs/video.mp4")
    if args.config is None:
        if args.prompt is None:
            raise ConfigError("prompt", "give --prompt TEXT (or a run config with --config)")
        return translate_request("cli", flags, output=output), apply_overrides({}, generator_flags(args))
    try:
        raw = apply_overrides(load_raw_config(args.config), overrides)
    except FileNotFoundError as exc:
        raise ConfigError("config", str(exc)) from None
    run = parse_config(RunConfig, raw)
    file_request = run.request
    if args.prompt is not None:  # --prompt replaces the file's prompt, list or file alike
        file_request = replace(file_request, inputs=replace(file_request.inputs, prompt_path=None))
    # FastVideo's run configs may hold several prompts (a list, or inputs.prompt_path: one per line): one video
    # each, which VideoGenerator.generate fans out; the flags are checked here with a stand-in prompt.
    many = args.prompt is None and (isinstance(file_request.prompt, list)
                                    or file_request.inputs.prompt_path is not None)
    if not many and args.prompt is None and not (isinstance(file_request.prompt, str)
                                                 and file_request.prompt.strip()):
        raise RequestError("request.prompt", "is required: a non-empty string describing the video (in the run "
                                             "config, or --prompt), a list of them, or request.inputs.prompt_path")
    if args.output is None and file_request.output.output_path:
        output = replace(output, output_path=file_request.output.output_path)
    prompt = args.prompt or ("several prompts" if many else file_request.prompt)
    from_flags = translate_request("cli", {**flags, "--prompt": prompt}, output=output)
    # File values stay unless a flag set them; errors name the flag, or request.<field> for the file's values.
    sampling = replace(file_request.sampling, **{p.split(".", 1)[1]: getattr(from_flags.request.sampling,
                                                                            p.split(".", 1)[1])
                                                 for p in from_flags.given if p.startswith("sampling.")})
    request = replace(file_request, prompt=file_request.prompt if many else from_flags.request.prompt,
                      sampling=sampling,
                      negative_prompt=from_flags.request.negative_prompt if "negative_prompt" in from_flags.given
                      else file_request.negative_prompt,
                      output=replace(file_request.output, save_video=True, return_frames=False,
                                     output_path=output.output_path))
    given = {spec.path: f"request.{spec.path}" for spec in FIELDS}
    given.update(from_flags.given if args.prompt is not None else
                 {k: v for k, v in from_flags.given.items() if k != "prompt"})
    generator = apply_overrides(config_to_dict(run.generator), generator_flags(args))
    return TranslatedRequest(request=request, edge="cli", given=given), generator


def _with_images(translated: TranslatedRequest, generator: dict[str, Any],
                 args: argparse.Namespace) -> tuple[TranslatedRequest, dict[str, Any]]:
    """``--image`` / ``--last-image`` set the request's image inputs (errors name the flags)."""
    images = {k: v for k, v in (("image_path", args.image), ("last_image", args.last_image)) if v is not None}
    request = replace(translated.request, inputs=replace(translated.request.inputs, **images))
    flags = {"inputs.image_path": "--image", "inputs.last_image": "--last-image"}
    given = {**flags, **translated.given, **{f"inputs.{k}": flags[f"inputs.{k}"] for k in images}}
    return TranslatedRequest(request=request, edge=translated.edge, given=given), generator


def cmd_generate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from fastvideo.runtime.generator import VideoGenerator

    translated, generator_config = _with_images(*_run_request(args), args)
    t0 = time.perf_counter()
    generator = VideoGenerator.from_config(generator_config)
    logger.info("model ready in %.1fs (%s)", time.perf_counter() - t0, generator.preset.name)
    bar = tqdm(desc="denoising", unit="step", file=sys.stderr, disable=None)

    def on_step(step: int, total: int) -> None:
        bar.total = total
        bar.update(1)

    try:
        result = generator.generate(translated.request, on_step=on_step)
    except RequestError as exc:  # the engine's range checks, named by the flag the user typed
        raise translated.relabel(exc) from exc
    finally:
        bar.close()
        generator.shutdown()
    results = result if isinstance(result, list) else [result]  # a list for several prompts, one video each
    reports = [{"video_path": r.video_path, **r.metadata} for r in results]
    if args.json:
        print(json.dumps(reports if isinstance(result, list) else reports[0], indent=2))
    else:
        for r, meta in zip(results, reports):
            print(f"wrote {r.video_path} ({meta['width']}x{meta['height']}, {meta['num_frames']} frames @ "
                  f"{meta['fps']} fps, seed {meta['seed']}) in {r.generation_time:.1f}s", file=sys.stderr)
    return 0


def _build_serve_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("serve", help="run the OpenAI-compatible HTTP + WebSocket streaming server",
                       description="Serve a model over OpenAI-compatible HTTP (/v1/videos, /v1/videos/generations, "
                                   "/v1/images/generations, /v1/models), the /v1/stream WebSocket (fMP4), /health, "
                                   "/readyz, /metrics and a browser player at /. Settings: defaults < --config file < "
                                   "flags < KEY=VALUE overrides.")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="dotted config overrides, e.g. engine.dtype=bf16 server.port=8001 streaming.max_sessions=8")
    p.add_argument("--config", default=None, help="YAML or JSON serve config (fastvideo.api.ServeConfig: generator, "
                                                   "server, default_request, streaming, and this server's queue, "
                                                   "pool, state; generator keys may sit at the top level); change "
                                                   "it with dotted flags such as --server.port 8001")
    add_generator_args(p)
    p.set_defaults(device=None, dtype=None)
    p.add_argument("--artifacts", default=None, help="folder of built artifacts (fastvideo-build --out) to load")
    p.add_argument("--cuda-graphs", nargs="*", default=None, metavar="WxHxF",
                   help="capture the DiT step as CUDA graphs at warmup for these sizes (no size: the model's default "
                        "size), for batch sizes 1..--max-batch; other sizes run eagerly. CUDA only "
                        "(engine.cuda_graphs in a config file for batch sizes and CFG on/off)")
    s = p.add_argument_group("server")
    s.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=None, help="port (default 8000)")
    s.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on /v1/* "
                                                   "(default: $FASTVIDEO_API_KEY, else no auth)")
    s.add_argument("--max-queue", type=int, default=None, help="jobs that may wait; more get 429 (default 16)")
    s.add_argument("--max-batch", type=int, default=None,
                   help="same-shape jobs denoised together in one DiT forward (default 1: no batching)")
    s.add_argument("--devices", default=None, metavar="LIST",
                   help="serve on several devices, one worker each (pool.devices): CUDA indices such as 0,1 (or "
                        "cuda:0,cuda:1), or cpu,cpu for CPU workers; the first runs in the server process, the "
                        "others in their own processes. Default: one engine on --device")
    s.add_argument("--state-url", default=None,
                   help="continuation state store: memory:// (default, state inline) or redis://host:port/db")
    s.add_argument("--output-dir", default=None, help="folder of generated files (default outputs/serving)")
    s.add_argument("--output-ttl", type=float, default=None, help="seconds finished files are kept (default 3600)")
    s.add_argument("--served-model-name", default=None, help="model id clients use (default: the preset name)")
    s.add_argument("--max-sessions", type=int, default=None, help="concurrent /v1/stream sessions (default 4)")
    s.add_argument("--stream-codec", choices=["h264", "av1"], default=None, help="fMP4 stream codec (default h264)")
    s.add_argument("--no-warmup", action="store_true", help="skip the startup warmup (ready at once)")
    s.add_argument("--log-format", choices=["text", "json"], default=None, help="log lines as text or JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.set_defaults(func=cmd_serve, accepts_dotted_overrides=True)
    return p


def serve_flags_from_args(args: argparse.Namespace) -> dict:
    """The nested mapping of flags the user gave explicitly (None / False mean "not given")."""
    flags: dict = {}

    def put(path: str, value: object) -> None:
        if value is None or value is False:
            return
        node = flags
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value

    put("generator.model_path", args.model_path)
    put("generator.pipeline.preset", args.preset)
    put("generator.pipeline.variant", args.variant)
    put("generator.engine.device", args.device)
    put("generator.engine.dtype", args.dtype)
    put("generator.engine.attention_backend", args.attention_backend)
    put("generator.engine.ops_backend", args.ops_backend)
    put("generator.engine.compile.enabled", bool(args.compile) or None)
    put("generator.engine.artifacts_path", args.artifacts)
    if args.cuda_graphs is not None:
        put("generator.engine.cuda_graphs.enabled", True)
        put("generator.engine.cuda_graphs.sizes", list(args.cuda_graphs) or None)
        if args.max_batch:
            put("generator.engine.cuda_graphs.batch_sizes", list(range(1, args.max_batch + 1)))
    put("server.host", args.host)
    put("server.port", args.port)
    put("server.api_key", args.api_key or read_env().api_key)
    put("server.output_dir", args.output_dir)
    put("server.output_ttl_s", args.output_ttl)
    put("server.served_model_name", args.served_model_name)
    put("server.log_format", args.log_format)
    put("queue.max_queue", args.max_queue)
    put("queue.max_batch", args.max_batch)
    if args.devices is not None:
        put("pool.devices", [d.strip() for d in args.devices.split(",")])
    put("state.url", args.state_url)
    put("streaming.max_sessions", args.max_sessions)
    put("streaming.codec", args.stream_codec)
    if args.no_warmup:
        flags.setdefault("server", {})["warmup"] = False
    return flags


def cmd_serve(args: argparse.Namespace) -> int:
    from fastvideo.serving.config import load_serve_config
    from fastvideo.serving.observability import setup_server_logging
    from fastvideo.serving.server import run_server

    config = load_serve_config(args.config, flags=serve_flags_from_args(args), overrides=args.overrides,
                               dotted=args.dotted_overrides)
    level = "DEBUG" if args.verbose else read_env().log_level
    setup_server_logging(config.server.log_format, level)
    return run_server(config)


def _build_router_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("router-serve", help="run the HTTP + WebSocket router in front of several servers",
                       description="Proxy /v1/* HTTP and /v1/stream WebSocket traffic to healthy replicas "
                                   "(health-checked, failover, sticky job ids and streaming sessions).")
    p.add_argument("--config", required=True, help="router YAML/JSON (host, port, replicas[url, primary], "
                                                   "health_check{path, interval_s, ...}, allowed_origins: browser "
                                                   "origins besides its own that may open /v1/stream); may sit "
                                                   "under 'router:'")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. port=9001")
    p.add_argument("--log-format", choices=["text", "json"], default="text", help="log lines as text or JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.set_defaults(func=cmd_router_serve)
    return p


def cmd_router_serve(args: argparse.Namespace) -> int:
    from fastvideo.serving.config import load_router_config
    from fastvideo.serving.observability import setup_server_logging
    from fastvideo.serving.server import run_router

    config = load_router_config(args.config, args.overrides)
    setup_server_logging(args.log_format, "DEBUG" if args.verbose else read_env().log_level)
    return run_router(config)


def build_parser() -> argparse.ArgumentParser:
    from fastvideo.eval.cli import build_eval_parser
    from fastvideo.serving.bench import build_bench_parser

    parser = argparse.ArgumentParser(prog="fastvideo", description="FastVideo Engine: video diffusion inference.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _build_generate_parser(sub)
    _build_serve_parser(sub)
    _build_router_parser(sub)
    build_bench_parser(sub)
    build_eval_parser(sub)
    return parser


def split_dotted_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """``argv`` without its FastVideo-style dotted overrides (``--a.b VALUE`` / ``--a.b=VALUE``: a dot in the
    flag's name, which no flag of this CLI has), and those overrides as tokens."""
    rest: list[str] = []
    dotted: list[str] = []
    tokens = list(argv)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token == "--":  # everything after is positional
            rest.extend(tokens[i:])
            break
        if token.startswith("--") and "." in token.partition("=")[0]:
            dotted.append(token)
            if "=" not in token and i + 1 < len(tokens):
                dotted.append(tokens[i + 1])
                i += 1
        else:
            rest.append(token)
        i += 1
    return rest, dotted


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    rest, dotted = split_dotted_overrides(sys.argv[1:] if argv is None else argv)
    args, extra = parser.parse_known_args(rest)
    if (extra or dotted) and not getattr(args, "accepts_dotted_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join([*dotted, *extra])}")
    if extra and args.command == "serve":
        parser.error(f"unrecognized arguments: {' '.join(extra)} (dotted config overrides look like "
                     "--server.port 8001)")
    args.dotted_overrides = [*dotted, *extra]
    _setup_logging(getattr(args, "verbose", False))
    try:
        return int(args.func(args) or 0)
    except (RequestError, ConfigError) as exc:
        print(f"fastvideo {args.command}: invalid input: {exc}", file=sys.stderr)
        return 2
    except ModelLoadError as exc:
        print(f"fastvideo {args.command}: cannot load the model: {exc}", file=sys.stderr)
        return 2
    except GenerationFailed as exc:  # the model ran but its output would be wrong: nothing was written
        print(f"fastvideo {args.command}: generation failed: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # unknown preset, unknown attention backend, ...
        print(f"fastvideo {args.command}: {exc}", file=sys.stderr)
        return 2
    except FastVideoError as exc:  # any other error raised on purpose: its message, never a traceback
        print(f"fastvideo {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"fastvideo {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
