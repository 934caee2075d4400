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


def test_moved_command_logic_stays_importable_from_the_commands():
    # the commands keep their old names, bound to the library's functions (one copy each)
    from trkx_ray import export, generate, study
    from trkx_ray.events import generation
    from trkx_ray.pipeline import verify
    from trkx_ray.scaling import study as scaling_study

    assert study.scaling_rows is scaling_study.scaling_rows
    assert study.write_outputs is scaling_study.write_outputs
    assert generate.event_seed is generation.event_seed
    assert export.verify_export is verify.verify_export
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        export.nope  # noqa: B018


def test_export_help_does_not_load_the_pipeline():
    code = ("import sys\nfrom trkx_ray import export\n"
            "print('trkx_ray.pipeline' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False False"


def test_run_plan_defaults_to_the_free_cores():
    from trkx_ray.scaling.resources import ResourceError, run_plan

    plan = run_plan({"CPU": 8.0}, cpu_actors=None, gpus=None, cores_per_actor=2)
    assert (plan.cpu_actors, plan.cores_per_actor, plan.gpus) == (4, 2, 0)
    # two GPUs x two actors each take one host core apiece; one CPU kept for readers
    plan = run_plan({"CPU": 8.0, "GPU": 2.0}, cpu_actors=None, gpus=None, actors_per_gpu=2,
                    reserved_cpus=1.0, events_per_actor=1)
    assert (plan.cpu_actors, plan.gpus, plan.gpu_actors, plan.events_per_actor) == (3, 2, 4, 1)
    assert plan.cpus_needed == 7
    # asked-for counts are kept as they are (check_totals judges them against Ray)
    plan = run_plan({"CPU": 2.0}, cpu_actors=5, gpus=1, cores_per_actor=3)
    assert (plan.cpu_actors, plan.gpus) == (5, 1)
    with pytest.raises(ResourceError, match=r"^--cores-per-actor 3: more cores than the 2 "
                       r"CPU\(s\) Ray sees$"):
        run_plan({"CPU": 2.0}, cpu_actors=None, gpus=None, cores_per_actor=3)
    with pytest.raises(ResourceError, match="more cores than the 1 CPU.s. Ray sees besides "
                       "the 1 reserved for reading --input"):
        run_plan({"CPU": 2.0}, cpu_actors=None, gpus=0, cores_per_actor=2, reserved_cpus=1.0)
    # no room for CPU actors next to a GPU actor is no error: the GPU actor runs alone
    plan = run_plan({"CPU": 1.0, "GPU": 1.0}, cpu_actors=None, gpus=None)
    assert (plan.cpu_actors, plan.gpu_actors) == (0, 1)


def test_run_source_choice(data_dir, tmp_path):
    from trkx_ray.scaling.sources import MAX_POOL, READ_AHEAD, run_source

    sim = run_source(None, events=None, default_events=20)
    assert (sim.events, sim.distinct, sim.pileup, sim.reserved_cpus) == (20, 20, 200.0, 0.0)
    assert sim.input_dir is None
    big = run_source(None, events=1000, default_events=20, pileup=5, seed=3, pool=None)
    assert (big.events, big.distinct, big.pileup, big.seed) == (1000, MAX_POOL, 5.0, 3)
    assert run_source(None, events=1000, default_events=20, pool=7).distinct == 7

    one = run_source(data_dir, events=None, default_events=20)
    assert (one.events, one.found, one.distinct, one.reserved_cpus) == (1, 1, 1, 0.0)
    cycled = run_source(data_dir, events=500, default_events=20)
    assert (cycled.events, cycled.distinct, cycled.reserved_cpus) == (500, 1, 0.0)
    # more distinct events than the read-ahead: streamed by readers on a reserved CPU
    for k in range(READ_AHEAD + 1):
        (tmp_path / f"event{k:09d}-hits.csv").touch()
    many = run_source(tmp_path, events=None, default_events=20)
    assert (many.found, many.distinct, many.reserved_cpus) == (READ_AHEAD + 1, READ_AHEAD + 1,
                                                               1.0)
    assert run_source(tmp_path, events=READ_AHEAD, default_events=20).reserved_cpus == 0.0
    with pytest.raises(FileNotFoundError, match="--input"):
        run_source(tmp_path / "missing", events=None, default_events=20)


def test_actor_start_cause_is_the_last_error_line():
    from trkx_ray.scaling.cluster import actor_start_cause

    text = ("ActorDiedError: The actor died ...\n  Traceback (most recent call last):\n"
            "    File \"x.py\", line 3\n  trkx_ray.pipeline.config.ConfigError: "
            "weights: no file x.pt\n")
    assert actor_start_cause(RuntimeError(text)) == (
        "trkx_ray.pipeline.config.ConfigError: weights: no file x.pt")
    assert actor_start_cause(RuntimeError("\n  something odd\nmore\n")) == "something odd"
    assert actor_start_cause(RuntimeError("")) == "RuntimeError('')"
