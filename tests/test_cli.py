"""The command line's shape: one argparse subcommand each, --help for each, one-line errors."""
import pytest

import adaptlang
from adaptlang.cli import build_parser, main

COMMANDS = ["run", "resume", "eval", "compare", "export", "config", "strategies", "instructions"]


def test_every_command_is_a_subcommand_with_its_own_help(capsys):
    assert sorted(build_parser().commands) == sorted(COMMANDS)
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)
    for name in COMMANDS:
        with pytest.raises(SystemExit) as exit_:
            main([name, "--help"])
        assert exit_.value.code == 0, name
        assert capsys.readouterr().out.startswith(f"usage: adaptlang {name} "), name


@pytest.mark.parametrize("argv, fragment", [
    ([], "the following arguments are required: COMMAND"),
    (["runn"], "invalid choice: 'runn'"),
    (["run", "--nope"], "unrecognized arguments: --nope"),
    (["instructions", "--limit", "many"], "argument --limit: invalid int value: 'many'"),
    (["export", "--out=x", "--resolved"], "--resolved is not an option of `adaptlang export` (it takes --out, "),
    (["compare", "a", "--base", "b"], "--base is not an option of `adaptlang compare`"),
    (["resume"], "resume needs exactly one run directory"),
])
def test_mistakes_are_one_line(argv, fragment, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("adaptlang: error: ") and err.count("\n") == 1, err
    assert fragment in err, err


def test_options_may_come_among_the_overrides(capsys):
    assert main(["config", "strategy=af", "--resolved", "strategy.af.every=7"]) == 0
    assert "every: 7" in capsys.readouterr().out


def test_resume_is_exported(tmp_path):
    assert "resume" in adaptlang.__all__
    with pytest.raises(adaptlang.UserError, match="is not a run directory"):
        adaptlang.resume(tmp_path / "nope")
