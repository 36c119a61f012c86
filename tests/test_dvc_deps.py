"""Every project file a DVC stage imports is one of that stage's ``deps`` (static, plain ``ast``).

A stage's code is the module its ``cmd`` runs (``python -m flows.<stage>``) plus everything that
module imports, transitively, inside ``pimc/`` and ``flows/`` (imports inside functions count:
they run too). If one of those files is not covered by a dep, editing it leaves stale outputs
that ``dvc status`` calls up to date. Nothing is imported or executed here.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pimc", "flows")


PIPELINES = (ROOT / "dvc.yaml", ROOT / "benchmarks" / "dvc.yaml")


def stages(dvc_yamls: tuple[Path, ...] = PIPELINES) -> dict[str, dict]:
    """``{name: stage}`` of every pipeline file, ``foreach`` stages expanded
    (``finetune@forecast`` ...). Paths in a stage are relative to the repository root: a file
    outside it must say ``wdir`` pointing there."""
    out = {}
    for dvc_yaml in dvc_yamls:
        out.update(_stages_of(dvc_yaml))
    return out


def _stages_of(dvc_yaml: Path) -> dict[str, dict]:
    out = {}
    for name, stage in yaml.safe_load(dvc_yaml.read_text())["stages"].items():
        wdir = (dvc_yaml.parent / stage.get("wdir", ".")).resolve()
        assert wdir == ROOT, f"{dvc_yaml}: stage {name} must run in the repository root"
        if "foreach" not in stage:
            out[name] = stage
            continue
        for item in stage["foreach"]:
            text = yaml.safe_dump(stage["do"]).replace("${item}", str(item))
            out[f"{name}@{item}"] = yaml.safe_load(text)
    return out


def module_file(module: str) -> Path | None:
    """The project file of a dotted module name (package: its ``__init__.py``), or None."""
    if module.split(".")[0] not in PACKAGES:
        return None
    base = ROOT.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _with_parents(module: str) -> list[str]:
    # Importing a.b.c runs a/__init__.py and a/b/__init__.py first.
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def imported_modules(path: Path) -> set[str]:
    """Dotted names of everything ``path`` imports (``from a import b`` adds ``a`` and ``a.b``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def closure(entry: str) -> set[Path]:
    """Project files that running ``python -m <entry>`` imports, transitively."""
    seen: set[Path] = set()
    todo = [entry]
    while todo:
        for name in _with_parents(todo.pop()):
            path = module_file(name)
            if path is None or path in seen:
                continue
            seen.add(path)
            todo.extend(imported_modules(path))
    return seen


def entry_module(cmd: str) -> str:
    match = re.search(r"python\S*\s+-m\s+([\w.]+)", cmd)
    assert match, f"stage cmd {cmd!r} does not run `python -m <module>`"
    return match.group(1)


def uncovered(stage: dict) -> list[str]:
    """Files the stage's code imports that none of its deps (file or folder) covers."""
    deps = [ROOT / d for d in stage.get("deps", [])]
    files = closure(entry_module(stage["cmd"]))
    missing = []
    for path in sorted(files):
        if not any(path == d or d in path.parents for d in deps):
            missing.append(str(path.relative_to(ROOT)))
    return missing


@pytest.mark.parametrize("name", sorted(stages()))
def test_stage_deps_cover_its_imports(name):
    missing = uncovered(stages()[name])
    assert not missing, f"dvc.yaml stage {name!r} imports files missing from its deps: {missing}"


@pytest.mark.parametrize("name", sorted(stages()))
def test_no_stage_depends_on_whole_packages(name):
    # Listing pimc/ or flows/ whole would re-run everything on any edit (e.g. pimc/predict.py).
    for dep in stages()[name].get("deps", []):
        assert dep.rstrip("/") not in (".", *PACKAGES), f"{name}: dep {dep!r} is too broad"


def test_predict_change_does_not_rerun_training():
    for name, stage in stages().items():
        if name.startswith(("pretrain", "finetune")):
            assert "pimc/predict.py" not in uncovered({**stage, "deps": []}), name


def test_a_removed_dep_is_caught():
    stage = stages()["pretrain"]
    deps = [d for d in stage["deps"] if d != "pimc/models"]
    assert len(deps) == len(stage["deps"]) - 1
    missing = uncovered({**stage, "deps": deps})
    assert "pimc/models/pimc.py" in missing and "pimc/models/build.py" in missing


def test_imports_inside_functions_count(tmp_path, monkeypatch):
    # A lazy import (inside a function body) still runs: it must be followed.
    pkg = tmp_path / "pimc"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from pimc import b\n    return b\n")
    (pkg / "b.py").write_text("from .c import X\n")
    (pkg / "c.py").write_text("X = 1\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path, raising=False)
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    got = {p.name for p in closure("pimc.a")}
    assert got == {"__init__.py", "a.py", "b.py", "c.py"}
