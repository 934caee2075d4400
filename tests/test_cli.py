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


def test_no_module_imports_a_command_module():
    # a command module parses flags and calls the library: nothing builds on it, and
    # what two commands share lives in the library or in trkx_ray.cli (read with ast)
    import ast
    from pathlib import Path

    package = Path(cli.__file__).resolve().parent
    commands = {module for module, _ in cli.COMMANDS.values()}
    bad = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
                names += [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            bad += [f"{path.relative_to(package)}:{node.lineno} imports {name}"
                    for name in names if name in commands]
    assert not bad, bad
