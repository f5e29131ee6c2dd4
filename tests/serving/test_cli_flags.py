"""``fastvideo generate``'s per-request flags come from the one wire field table (fastvideo.api.wire.FIELDS):
every field with a flag is a flag with that field's help, a field added to the table shows up in the CLI and
reaches the request, and the values a typed field allows (``sampling.sampler``) are the flag's choices. In
process, no model is loaded.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import pytest

from fastvideo.api import wire
from fastvideo.api.wire import FIELDS, FieldSpec
from fastvideo.serving import cli


def _generate_parser() -> argparse.ArgumentParser:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["generate"]


@pytest.fixture(autouse=True)
def _wide_help(monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "2000")  # argparse wraps help at the terminal width (and at hyphens)


def _help_text() -> str:
    return " ".join(_generate_parser().format_help().split())


def test_every_wire_field_with_a_flag_is_a_flag_with_its_help() -> None:
    text = _help_text()
    flagged = [spec for spec in FIELDS if spec.flag]
    assert len(flagged) >= 14  # prompt, negative prompt, the sampling fields
    for spec in flagged:
        assert spec.help, spec.path  # the table explains every field the CLI offers
        assert spec.flag in text and " ".join(spec.help.split()) in text, spec.path
    assert "multiple of 16" in text and "(required without --config)" in text
    for spec in FIELDS:
        if spec.flag is None:  # a field with no flag stays off the command line
            assert f"--{spec.short.replace('_', '-')}" not in text, spec.path


def test_flags_parse_into_the_wire_names_the_translation_reads() -> None:
    args, _ = _generate_parser().parse_known_args(
        ["--prompt", "a fox", "--num-inference-steps", "4", "--sampler", "euler", "--dmd-denoising-steps",
         "1000,500", "--guidance-scale-2", "3"])
    assert cli._request_flags(args) == {"--prompt": "a fox", "--steps": "4", "--sampler": "euler",
                                        "--dmd-denoising-steps": "1000,500", "--guidance-scale-2": "3"}
    translated = wire.translate_request("cli", cli._request_flags(args))
    assert translated.request.sampling.num_inference_steps == 4
    assert translated.request.sampling.dmd_denoising_steps == [1000, 500]
    assert translated.given["sampling.num_inference_steps"] == "--steps"  # errors name the canonical flag


def test_sampler_choices_come_from_the_request_type(capsys) -> None:
    assert cli._literal_choices("sampling.sampler") == ["unipc", "euler", "dmd"]
    assert cli._literal_choices("sampling.width") is None and cli._literal_choices("state") is None
    with pytest.raises(SystemExit) as exit_info:
        _generate_parser().parse_args(["--prompt", "x", "--sampler", "ddim"])
    assert exit_info.value.code == 2 and "invalid choice: 'ddim'" in capsys.readouterr().err


def test_a_field_added_to_the_wire_table_shows_up_in_the_cli(monkeypatch) -> None:
    """Give a flag to a field the CLI has none for yet: it becomes a flag, with its help, reaching the request."""
    spec = next(s for s in FIELDS if s.path == "sampling.continuation_strength")
    assert spec.flag is None and "--continuation-strength" not in _help_text()
    table = tuple(replace(s, flag="--continuation-strength") if s is spec else s for s in FIELDS)
    monkeypatch.setattr(wire, "FIELDS", table)
    monkeypatch.setattr(wire, "_BY_PATH", {s.path: s for s in table})
    monkeypatch.setattr(cli, "FIELDS", table)
    text = _help_text()
    assert "--continuation-strength" in text and " ".join(spec.help.split()) in text
    args, _ = _generate_parser().parse_known_args(["--prompt", "x", "--continuation-strength", "0.5"])
    translated = wire.translate_request("cli", cli._request_flags(args))
    assert translated.request.sampling.continuation_strength == 0.5
    assert translated.given["sampling.continuation_strength"] == "--continuation-strength"


def test_a_short_alias_is_added_only_where_the_flag_differs() -> None:
    parser = _generate_parser()
    strings = {opt for action in parser._actions for opt in action.option_strings}
    assert {"--steps", "--num-inference-steps"} <= strings
    for spec in FIELDS:
        if spec.flag and spec.flag == f"--{spec.short.replace('_', '-')}":
            matches = [a for a in parser._actions if spec.flag in a.option_strings]
            assert len(matches) == 1 and matches[0].option_strings == [spec.flag]
    assert FieldSpec("p", "p", "str", None).help == ""  # help is optional in the table


def test_image_help_names_the_image_models_and_the_engine_agrees() -> None:
    """``--image``'s help names Wan I2V, Wan2.2 TI2V-5B and LTX-2, and each built-in it names as taking an image
    does take one by the engine's own request checks (fastvideo-tiny, text-to-video, refuses one)."""
    from fastvideo.api import GenerationRequest, InputConfig
    from fastvideo.api.errors import RequestError
    from fastvideo.api.presets import BUILTIN_MODEL_NAMES, get_preset
    from fastvideo.engine.request_support import check_ltx2_request_fields, check_request_fields

    text = _help_text()
    for words in ("Wan2.1 image-to-video", "Wan2.2 TI2V-5B", "LTX-2", "refused by text-to-video models"):
        assert words in cli.IMAGE_HELP, words
    assert " ".join(cli.IMAGE_HELP.split()) in text and "fastvideo-tiny-i2v (image-to-video)" not in text
    request = GenerationRequest(prompt="x", inputs=InputConfig(image_path="first.png"))
    for name in BUILTIN_MODEL_NAMES:
        assert name in text  # --model-path lists every built-in model
        preset = get_preset(name)
        named = f"built-in: {name})" in cli.IMAGE_HELP
        if preset.model_family == "ltx2":
            check_ltx2_request_fields(request, name)  # an image is accepted
            assert named
        elif named:
            check_request_fields(request, name, preset.workload_type or "t2v")
        else:
            with pytest.raises(RequestError, match="text-to-video"):
                check_request_fields(request, name, preset.workload_type or "t2v")
