"""The source tree's layers point one way: web → services → execution and storage → model.

Each server sub-package has a rank; a module may import from its own package, from
lower ranks, and (services only) from the other services. The static check reads
every import of every module (relative ones resolved to the file they name), so a
wrong-way import fails here before anyone trips over a cycle; the dynamic checks
import the lower layers in a fresh interpreter and run `bnlab --help`, to see what
actually gets loaded.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# bnlab sub-package -> rank; a module imports only from ranks below its own,
# except within its own package and between the services (rank 3).
RANKS = {
    "bnlab.model": 0,
    "bnlab.server.status": 1,  # the run statuses: a vocabulary every layer shares
    "bnlab.server.execution": 2,
    "bnlab.server.storage": 2,
    "bnlab.server.runs": 3,
    "bnlab.server.experiments": 3,
    "bnlab.server.live": 3,
    "bnlab.server.web": 4,
    "bnlab.server.cli": 5,
    "bnlab.server.testing": 5,
}
SERVICES = 3


def _package(module: str) -> str | None:
    """The ranked package `module` belongs to (the longest prefix in RANKS)."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        name = ".".join(parts[:end])
        if name in RANKS:
            return name
    return None


def _modules() -> dict[str, Path]:
    found = {}
    for folder in ("model", "server"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(["bnlab", *parts])] = path
    return found


def _imports(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, module imported) for every bnlab import in the file, relative ones resolved."""
    is_package = path.name == "__init__.py"
    here = module.split(".") if is_package else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if not target.startswith("bnlab"):
                continue
            # `from . import ws` imports the module ws of the package
            names = [f"{target}.{a.name}" for a in node.names]
            found += [(node.lineno, n if n in MODULES else target) for n in names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("bnlab")]
    return found


MODULES = _modules()


def test_every_module_belongs_to_a_ranked_layer():
    unranked = [m for m in MODULES if m not in ("bnlab.server",) and _package(m) is None]
    assert not unranked, f"put these in a layer (tests/test_layers.py RANKS): {unranked}"


def test_imports_point_down_the_layers():
    wrong = []
    for module, path in MODULES.items():
        mine = _package(module)
        if mine is None:
            continue
        for line, target in _imports(module, path):
            theirs = _package(target)
            if theirs is None or theirs == mine:
                continue
            if RANKS[theirs] < RANKS[mine]:
                continue
            if RANKS[theirs] == RANKS[mine] == SERVICES:
                continue
            wrong.append(f"{path.relative_to(ROOT)}:{line} ({mine}) imports {target}")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_the_checker_sees_a_wrong_way_import(tmp_path, monkeypatch):
    """The static check is not vacuous: a store that imports the web layer is caught."""
    bad = tmp_path / "store.py"
    bad.write_text("from ..web.app import create_app\nfrom ...model.config import RunConfig\n")
    found = _imports("bnlab.server.storage.store", bad)
    assert [t for _, t in found] == ["bnlab.server.web.app", "bnlab.model.config"]
    assert RANKS[_package(found[0][1])] > RANKS[_package("bnlab.server.storage.store")]


def _loaded_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print('\\n'.join(sys.modules))"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return set(out.split())


def test_the_lower_layers_load_no_web_module():
    lower = [
        m
        for m in MODULES
        if (p := _package(m)) is not None and RANKS[p] <= SERVICES and "ray" not in m
    ]
    assert "bnlab.server.storage.store" in lower and "bnlab.server.experiments.service" in lower
    loaded = _loaded_after("\n".join(f"import {m}" for m in lower))
    web = sorted(m for m in loaded if m.startswith(("bnlab.server.web", "fastapi", "uvicorn")))
    assert not web, f"a lower layer loads the web layer: {web}"


@pytest.mark.parametrize("argv", [["--help"], ["serve", "--help"], ["train", "--help"]])
def test_help_loads_neither_scipy_nor_tensorflow(argv):
    code = (
        "import contextlib, io\n"
        "from bnlab.server.cli import main\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        f"    main({argv!r})"
    )
    loaded = _loaded_after(code)
    assert "bnlab.server.cli" in loaded
    heavy = sorted(m for m in ("scipy", "tensorflow", "numpy") if m in loaded)
    assert not heavy, f"bnlab {' '.join(argv)} loads {heavy}"
