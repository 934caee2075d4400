"""Safe loading, checked on the source: regressions fail here.

No eval/exec/pickle/marshal of anything, YAML only through ``safe_load``, every
``torch.load`` with ``weights_only=True``, and the Ray instance the project starts
itself binds to localhost without a dashboard.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "trkx_ray"
SOURCES = sorted(PACKAGE.rglob("*.py"))

FORBIDDEN_CALLS = {
    "eval", "exec", "pickle.load", "pickle.loads", "pickle.Unpickler", "marshal.loads",
    "marshal.load", "yaml.load", "yaml.unsafe_load", "yaml.full_load", "cloudpickle.loads",
    "dill.loads", "shelve.open",
}


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    return ""


def _calls(path: Path) -> list[ast.Call]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)]


def _keyword(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def test_sources_found():
    assert len(SOURCES) > 20


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_unsafe_deserialisation_or_eval(path):
    bad = [
        f"{path.name}:{c.lineno} {_name(c.func)}"
        for c in _calls(path)
        if _name(c.func) in FORBIDDEN_CALLS
    ]
    assert not bad, f"unsafe calls: {bad}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_torch_load_is_weights_only(path):
    for call in _calls(path):
        if _name(call.func) == "torch.load":
            flag = _keyword(call, "weights_only")
            assert isinstance(flag, ast.Constant) and flag.value is True, (
                f"{path.name}:{call.lineno}: torch.load without weights_only=True"
            )


def test_embedded_ray_is_local_without_dashboard():
    """Every ray.init that starts a local instance binds 127.0.0.1 and has no dashboard."""
    inits = [(p, c) for p in SOURCES for c in _calls(p) if _name(c.func) == "ray.init"]
    assert inits, "the project starts Ray somewhere"
    for path, call in inits:
        if _keyword(call, "address") is not None:
            continue  # joins a cluster the user named: nothing is started here
        dash = _keyword(call, "include_dashboard")
        host = _keyword(call, "dashboard_host")
        assert (isinstance(dash, ast.Constant) and dash.value is False) or (
            isinstance(host, ast.Constant) and host.value in ("127.0.0.1", "localhost")
        ), f"{path.name}:{call.lineno}: dashboard not disabled or bound to localhost"
        ip = _keyword(call, "_node_ip_address")
        assert isinstance(ip, ast.Constant) and ip.value == "127.0.0.1", (
            f"{path.name}:{call.lineno}: local Ray not bound to 127.0.0.1"
        )


def test_the_check_catches_a_regression(tmp_path):
    """The scanner really flags what it should (guards against a vacuous test)."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import pickle, torch, yaml\n"
        "pickle.loads(b'')\n"
        "yaml.load('a: 1')\n"
        "torch.load('w.pt')\n"
    )
    names = [_name(c.func) for c in _calls(bad)]
    assert {"pickle.loads", "yaml.load"} <= set(names) & FORBIDDEN_CALLS
    loads = [c for c in _calls(bad) if _name(c.func) == "torch.load"]
    assert loads and _keyword(loads[0], "weights_only") is None
