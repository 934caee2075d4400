"""The one console script, ``trkx-ray <command>`` (trkx_ray.cli)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from trkx_ray import cli


def test_help_lists_every_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("run", "study", "bench", "serve", "loadgen", "evaluate", "generate", "train",
                 "export", "events"):
        assert f"  {name} " in out
    assert cli.main([]) == 2  # no command: usage, non-zero


def test_unknown_command_names_it(capsys):
    assert cli.main(["fly"]) == 2
    assert "unknown command 'fly'" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_each_command_answers_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([name, "--help"])
    assert exc.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_help_imports_neither_torch_nor_ray():
    code = ("import sys\nfrom trkx_ray import cli\ncli.main(['--help'])\n"
            "print('torch' in sys.modules, 'ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip().endswith("False False")
