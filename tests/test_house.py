"""The rooms point one way: the runtime applies the exit rule without the search, and the analysis (and the report
command built on it) runs where torch is not installed."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at its top or inside a function (lazy imports count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize("room", ["runtime", "exits", "train", "cost", "nn", "space", "data", "analysis"])
def test_rooms_below_the_search_never_import_it(room):
    files = sorted((ROOT / "aebnas" / room).rglob("*.py"))
    assert files
    offending = {f"{f.relative_to(ROOT)}: {m}" for f in files for m in imported_modules(f)
                 if m == "aebnas.search" or m.startswith("aebnas.search.")}
    assert not offending


HELPERS = {"config_checks", "atomic_write"}  # torch-free modules at the package's root, below every room
#: Each room and the rooms it may import (docs/design.md): space <- nn <- cost <- train <- search <- runtime <- cli,
#: data below train, the exit rule below search and runtime, the analysis torch-free on the space alone.
MAY_IMPORT = {
    "space": set(),
    "data": set(),
    "nn": {"space"},
    "cost": {"space", "nn"},
    "exits": {"space", "nn", "cost"},
    "analysis": {"space"},
    "train": {"space", "nn", "cost", "exits", "data"},
    "search": {"space", "nn", "cost", "exits", "data", "train", "analysis"},
    "runtime": {"space", "nn", "cost", "exits", "data", "train", "analysis"},
    "cli": {"space", "nn", "cost", "exits", "data", "train", "analysis", "search", "runtime"},
}


def test_every_room_imports_only_the_rooms_below_it():
    rooms = {p.name for p in (ROOT / "aebnas").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert rooms == set(MAY_IMPORT)  # a new room gets its place here and on the design page
    offending = []
    for room, allowed in MAY_IMPORT.items():
        for f in sorted((ROOT / "aebnas" / room).rglob("*.py")):
            for m in imported_modules(f):
                parts = m.split(".")
                if parts[0] == "aebnas" and len(parts) > 1 and parts[1] not in allowed | HELPERS | {room}:
                    offending.append(f"{f.relative_to(ROOT)}: {m}")
    assert not offending


def test_the_import_parser_sees_lazy_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import os\n\ndef f():\n    from aebnas.search.settings import SearchSettings\n")
    assert imported_modules(probe) == {"os", "aebnas.search.settings"}


def _torch_loaded_after(code: str, *args: str) -> bool:
    probe = f"import sys\n{code}\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, cwd=ROOT, check=True)
    return out.stdout.strip().splitlines()[-1] == "True"


def test_analysis_loads_no_torch():
    assert not _torch_loaded_after("import aebnas.analysis, aebnas.analysis.report, aebnas.analysis.versus, "
                                   "aebnas.analysis.plots, aebnas.analysis.genome_view, aebnas.analysis.stream_plot")
    assert _torch_loaded_after("import aebnas.nn")  # the probe does see torch where it is loaded


def test_report_command_writes_its_tables_without_torch(tmp_path):
    code = ("from pathlib import Path\nfrom tests.test_report import _run\nroot = Path(sys.argv[1])\n"
            "_run(root, '0', 'aebnas', 0, [(0.9, 100), (0.8, 50)], pareto=[(0.85, 90, 0.92, 95)])\n"
            "from aebnas.cli.report import main\nmain([str(root), '--out', str(root / 'report')])")
    assert not _torch_loaded_after(code, str(tmp_path))
    assert "0.8500" in (tmp_path / "report" / "summary.tex").read_text()
