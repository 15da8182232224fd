"""What a user sees first: ``fedsim --version`` and ``fedsim --help``, in-process."""

from __future__ import annotations

import argparse
import importlib.metadata
import shlex
import tomllib
from pathlib import Path

import pytest

import fedsim
from fedsim.cli import DESCRIPTION, build_parser, main

ROOT = Path(__file__).parents[1]


def _help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    return captured.out


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert _help(["--version"], capsys) == f"fedsim {fedsim.__version__}\n"


def test_the_version_has_one_home() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "fedsim.__version__"}
    name = project["project"]["name"]
    try:
        installed = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"the distribution {name} is not installed in this environment")
    assert installed == fedsim.__version__


def test_help_says_what_fedsim_does_and_lists_every_command(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    text = _help(["--help"], capsys)
    assert DESCRIPTION in text and len(DESCRIPTION.splitlines()) == 2
    assert "thin shell" not in text  # the module docstring is for developers
    commands = _commands()
    assert set(commands) == {"scenario", "validate", "sweep", "data", "bench", "replay"}
    for name, sub in commands.items():
        line = sub.description
        assert line and "\n" not in line, name
        assert any(row.split() == [name, *line.split()] for row in text.splitlines()), name
        # each command's own --help opens with the same line
        assert line in _help([name, "--help"], capsys)
    assert max(len(row) for row in text.splitlines()) <= 80


def test_every_example_in_help_is_a_valid_command_on_shipped_files(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = _help(["--help"], capsys)
    epilog = text[text.index("examples:"):]
    examples = [row.strip() for row in epilog.splitlines() if row.strip().startswith("fedsim ")]
    assert len(examples) >= 4
    assert {shlex.split(e)[1] for e in examples} >= {"scenario", "validate", "sweep"}
    for example in examples:
        argv = shlex.split(example)[1:]
        if "--help" in argv:
            continue
        args = build_parser().parse_args(argv)  # raises InputError on a bad example
        path = getattr(args, "path", None)
        if path is not None:
            assert (ROOT / path).is_file(), example
            if args.command == "scenario":  # the overrides must validate too
                assert main(["validate", str(ROOT / path), *_overrides(argv)]) == 0, example


def _overrides(argv: list[str]) -> list[str]:
    """The ``--set K=V`` pairs of an argument list, as ``validate`` takes them."""
    pairs = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--set"]
    return [item for pair in pairs for item in ("--set", pair)]


def test_an_unknown_command_exits_2_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "x.yaml"]) == 2
    err = capsys.readouterr().err
    assert "'simulate'" in err and "scenario" in err and "Traceback" not in err
