"""scripts/import_graph.py: the import graph of builders/ has no cycles, upward arrows or private names across files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "import_graph.py"


def _run(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--root", str(root)], capture_output=True, text=True,
                          timeout=60)


def test_builders_import_graph_is_clean():
    result = _run(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    for folder in ("source", "export", "precision", "checks", "engine"):
        assert f"builders/{folder}/" in result.stdout
    assert "no cycles, no upward arrows, no private names across files" in result.stdout


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / "builders" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_a_cycle_an_upward_arrow_and_a_private_name_are_named(tmp_path: Path):
    _write(tmp_path, {
        "__init__.py": "",
        "shared.py": "",
        "pipeline.py": "from .source import a\nfrom .engine import build\n",
        "source/__init__.py": "",
        "source/a.py": "from . import b\n",
        "source/b.py": "def f():\n    from .a import _hidden  # inside a function, still an import\n",
        "source/c.py": "from trtinfer.builders.source import b\nb._secret\n",
        "engine/__init__.py": "",
        "engine/build.py": "from ..source import a\n",
        "precision/__init__.py": "",
        "precision/tool.py": "from ..engine.build import run\n",
    })
    result = _run(tmp_path)
    assert result.returncode == 1, result.stdout
    out = result.stdout
    assert "cycle: source.a -> source.b -> source.a" in out
    assert "upward arrow: precision.tool -> engine.build" in out
    assert "stage 'precision' imports stage 'engine', which comes later" in out
    assert "private import: source.b line 2: _hidden from source.a" in out
    assert "private import: source.c line 2: b._secret of source.b" in out
    assert "pipeline -> engine.build" not in out  # the pipeline is above every stage
    assert "engine.build -> source.a" not in out.split("\n\n")[-1]  # a later stage may import an earlier one
    assert "4 problem(s)" in out


def test_a_shared_module_importing_a_stage_is_an_upward_arrow(tmp_path: Path):
    _write(tmp_path, {"__init__.py": "", "shared.py": "from .source.types import Thing\n",
                      "source/__init__.py": "", "source/types.py": "Thing = 1\n"})
    result = _run(tmp_path)
    assert result.returncode == 1
    assert "upward arrow: shared -> source.types (line 1): a shared module imports stage 'source'" in result.stdout
