"""dvc.yaml stays honest: each stage lists exactly the project code its script runs, so `dvc repro`
re-runs a stage when, and only when, code it imports changed."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml
from conftest import PROJECT

PACKAGES = {"aivsreal": PROJECT / "src" / "aivsreal", "pipeline": PROJECT / "pipeline"}


def module_file(name: str) -> Path | None:
    """The file of a project module (`aivsreal.x`, `pipeline.y`), None for anything else."""
    top, *rest = name.split(".")
    if top not in PACKAGES:
        return None
    base = PACKAGES[top].joinpath(*rest)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Every module an import statement in `path` names, at module level or inside functions: for
    `from a.b import c` both `a.b` and `a.b.c` (c may be a submodule)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def runs_code(path: Path) -> bool:
    """A package `__init__.py` with nothing but a docstring and constants cannot change a stage's result."""
    if path.name != "__init__.py":
        return True
    return any(isinstance(node, ast.Import | ast.ImportFrom) for node in ast.walk(ast.parse(path.read_text())))


def code_closure(module: str) -> set[str]:
    """Project files (relative to the project root) that importing `module` can execute."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        path = module_file(todo.pop())
        if path is None or path in seen:
            continue
        seen.add(path)
        todo += imported_modules(path)
        parts = path.relative_to(PROJECT).with_suffix("").parts  # a submodule also runs its packages' __init__
        todo += [".".join(parts[1 if parts[0] == "src" else 0 : i]) for i in range(2, len(parts))]
    return {p.relative_to(PROJECT).as_posix() for p in seen if runs_code(p)}


STAGES = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"]
# Files a stage reads as files rather than imports: train logs the pyfunc entry file as the model's code.
SHIPPED = {"train": {"src/aivsreal/serving/pyfunc_entry.py"}}


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_deps_list_exactly_the_project_code_its_script_imports(name):
    stage = STAGES[name]
    module = stage["cmd"].removeprefix("python -m ").split()[0]
    declared = {d for d in stage["deps"] if isinstance(d, str) and d.endswith(".py")}
    needed = code_closure(module) | SHIPPED.get(name, set())
    assert not needed - declared, f"stage {name}: add to deps in dvc.yaml: {sorted(needed - declared)}"
    assert not declared - needed, f"stage {name}: deps it does not import, remove: {sorted(declared - needed)}"


def test_the_import_walk_follows_function_level_and_submodule_imports():
    """The check itself: pipeline.summary imports aivsreal.tracking at module level, which imports
    aivsreal.params only inside a function; both must be found, and a module it never reaches must not."""
    closure = code_closure("pipeline.summary")
    assert {"pipeline/summary.py", "src/aivsreal/tracking.py", "src/aivsreal/params.py"} <= closure
    assert "src/aivsreal/sample_data.py" not in closure
