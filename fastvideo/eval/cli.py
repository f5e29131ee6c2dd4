"""``fastvideo eval list`` and ``fastvideo eval run``: the quality gate on the command line.

Contract: :func:`build_eval_parser` adds the ``eval`` sub-command to the ``fastvideo`` parser (the serving
CLI calls it); ``list`` prints the registry (a table, or ``--json``); ``run`` scores ``--videos`` with
``--metrics`` through :func:`fastvideo.eval.evaluate` and prints the report as JSON on stdout, or writes it
to ``--output`` through a temporary sibling and a rename (never a half-written file). Bad input raises
:class:`~fastvideo.eval.EvalError` (a ``ValueError``), which the ``fastvideo`` entry point reports in one
line with exit status 2; no traceback. Building the parser imports no torch (the metrics load when run).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fastvideo.eval.registry import EvalError, EvalOptions, list_metrics, metric_info
from fastvideo.fileio import write_atomic

EPILOG = """\
metrics (fastvideo eval list shows them all):
  common.psnr, common.ssim, common.mse   against --reference (same frame count and size)
  temporal.flicker, temporal.motion      on the video alone
  clip.clip_score                        needs --clip-model PATH (a local CLIP folder) and --prompt

examples:
  fastvideo eval list
  fastvideo eval run --videos out/*.mp4 --reference ref/ --metrics psnr,ssim --output scores.json
  fastvideo eval run --videos frames_dir/ clip.npy --metrics temporal
  fastvideo eval run --videos clip.mp4 --metrics clip.clip_score --clip-model ~/models/clip-vit-base-patch32 \\
      --prompt "a red fox running through snow"
"""


def build_eval_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("eval", help="score videos with quality metrics (PSNR, SSIM, flicker, CLIP score, ...)",
                       description="The quality gate: list the registered metrics, or run them over videos (MP4 "
                                   "and other FFmpeg containers, folders of PNG/JPEG frames, .npy arrays) and get "
                                   "a JSON report. Nothing is downloaded: model metrics load from local paths.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="eval_action", metavar="{list,run}")
    actions.required = True

    lst = actions.add_parser("list", help="list the registered metrics",
                             description="List the registered metrics: name, what each needs, description.")
    lst.add_argument("--group", default=None, help="only this group (common, temporal, clip)")
    lst.add_argument("--json", action="store_true", help="print the registry as JSON")
    lst.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    lst.set_defaults(func=cmd_eval_list)

    run = actions.add_parser("run", help="score videos and print (or write) a JSON report",
                             description="Score videos with metrics and print a JSON report on stdout (or write "
                                         "it with --output). Reference metrics compare frame by frame against "
                                         "--reference, which must match each video's frame count and size.",
                             epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--videos", nargs="+", required=True, metavar="PATH",
                     help="videos to score: files, globs, folders of videos, folders of frames (one video each), "
                          ".npy arrays (T, H, W[, C]) in uint8 or float [0, 1]")
    run.add_argument("--reference", nargs="+", default=None, metavar="PATH",
                     help="reference video(s): one for all videos, or one per video (paired by file name, else by "
                          "order); same forms as --videos")
    run.add_argument("--metrics", default="all",
                     help="comma-separated names (common.psnr or just psnr), groups (common, temporal, clip), or "
                          "'all' (default: every metric the input allows; the rest are listed as skipped)")
    run.add_argument("--prompt", "--text-prompt", dest="prompt", nargs="+", default=None, metavar="TEXT",
                     help="prompt(s) for text metrics (clip.clip_score): one for all videos or one per video")
    run.add_argument("--clip-model", default=None, metavar="PATH",
                     help="local transformers CLIP folder (config.json, weights, tokenizer) enabling "
                          "clip.clip_score; nothing is downloaded")
    run.add_argument("--device", default="cpu", help="torch device for the metrics (cpu, cuda, cuda:1)")
    run.add_argument("--output", "--out", dest="output", default=None, metavar="FILE.json",
                     help="write the JSON report here instead of stdout")
    run.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    run.set_defaults(func=cmd_eval_run)
    return p


def cmd_eval_list(args: argparse.Namespace) -> int:
    names = list_metrics(args.group)
    if not names:
        groups = sorted({n.split(".")[0] for n in list_metrics()})
        raise EvalError(f"no metric in group {args.group!r}; groups: {', '.join(groups)}")
    infos = [metric_info(n) for n in names]
    if args.json:
        print(json.dumps(infos, indent=2))
        return 0
    width = max(len(n) for n in names)
    print(f"{'metric':<{width}}  needs                  description")
    for info in infos:
        needs = [word for word, flag in (("reference", info["needs_reference"]), ("prompt", info["needs_prompt"]),
                                         (info["model_flag"] or "", info["needs_model"])) if flag]
        print(f"{info['name']:<{width}}  {', '.join(needs) or '-':<21}  {info['description']}")
    return 0


def _write_atomic(path: Path, text: str) -> None:
    if not path.parent.is_dir():
        raise EvalError(f"--output {path}: the folder {path.parent} does not exist")
    write_atomic(path, text)


def cmd_eval_run(args: argparse.Namespace) -> int:
    from fastvideo.eval.readers import expand_sources
    from fastvideo.eval.runner import evaluate

    output = Path(args.output) if args.output else None
    if output is not None and not output.parent.is_dir():  # before any decoding
        raise EvalError(f"--output {output}: the folder {output.parent} does not exist")
    videos = expand_sources(args.videos)
    reference = expand_sources(args.reference) if args.reference else None
    options = EvalOptions(device=args.device, clip_model=args.clip_model)
    report = evaluate(videos, args.metrics, reference=reference, prompts=args.prompt, options=options)
    text = report.to_json()
    if output is None:
        print(text)
    else:
        _write_atomic(output, text + "\n")
        summary = ", ".join(f"{k} {v:.4g}" for k, v in report.summary.items())
        print(f"wrote {output}: {len(report.videos)} video(s); mean {summary}", file=sys.stderr)
    return 0
