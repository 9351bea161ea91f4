"""The package layout: one subpackage per stage, imports flowing one way, no import cycle.

The import graph is read with `ast` (every import, also those inside functions and under
TYPE_CHECKING), so a cycle hidden in a function body fails here as well.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "audience"
BASE_MODULES = {"__init__", "errors", "settings", "labels", "registry", "files", "inputs", "figures"}
# A stage may import base modules, its own modules and those of a lower rank; never a stage of
# the same or a higher rank (eda and faces are independent, so are train and predict, compare and publish,
# ui and cli). faces sits below model (the typed checkpoint parses its crop and alignment) and so below train
# and predict, which both use it; bench measures trained models and the Predict path; compare shows bench's
# latencies; the app's tabs (ui) and the command lines (cli) sit on top.
STAGE_RANK = {"data": 1, "eda": 2, "faces": 2, "model": 3, "train": 4, "predict": 4, "bench": 5, "compare": 6,
              "publish": 6, "ui": 7, "cli": 7}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _imports(path: Path, known: set[str]) -> set[str]:
    """The audience modules `path` imports; `from pkg import name` counts as pkg.name when that is a module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module
                     for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in known and name != "audience"}
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, set(modules)) for name, path in modules.items()}


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in STAGE_RANK) else None


def test_only_base_modules_sit_directly_in_the_package():
    loose = {path.stem for path in PACKAGE.glob("*.py")} - BASE_MODULES
    assert not loose, f"modules outside a stage subpackage: {sorted(loose)}"
    stages = {path.name for path in PACKAGE.iterdir() if (path / "__init__.py").is_file()}
    assert stages == set(STAGE_RANK)


def _against_the_order(graph: dict[str, set[str]]) -> list[str]:
    against = []
    for module, imported in graph.items():
        stage = _stage(module)
        for target in imported:
            other = _stage(target)
            if stage is None and other is not None:
                against.append(f"base module {module} imports {target}")
            elif stage is not None and other is not None and other != stage and STAGE_RANK[other] >= STAGE_RANK[stage]:
                against.append(f"{module} ({stage}) imports {target} ({other})")
    return sorted(against)


def test_imports_flow_down_the_stages():
    against = _against_the_order(_graph())
    assert not against, "imports against the stage order:\n" + "\n".join(against)


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle():
    cycle = _find_cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_checks_see_a_cycle_and_a_backward_import():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None
    assert _stage("audience.train.fold") == "train" and _stage("audience.labels") is None
    assert _stage("audience.ui") == "ui"


def test_the_check_sees_a_wrong_way_import_of_the_faces_stage():
    # Training and prediction both import the faces stage directly (no callback carries it across).
    allowed = {"audience.train.cross_validate": {"audience.faces.align"},
               "audience.predict.predictor": {"audience.faces.align", "audience.faces.detector"},
               "audience.faces.align": {"audience.faces.crop_geometry", "audience.data.images", "audience.errors"}}
    assert _against_the_order(allowed) == []
    # The faces stage sits below model, train and predict, and beside eda.
    for target in ("audience.predict.predictor", "audience.train.cross_validate", "audience.model.checkpoint",
                   "audience.eda.tables", "audience.ui.predict"):
        assert _against_the_order({"audience.faces.align": {target}}) == [
            f"audience.faces.align (faces) imports {target} ({_stage(target)})"]
    assert _against_the_order({"audience.labels": {"audience.faces.detector"}}) == [
        "base module audience.labels imports audience.faces.detector"]


def test_every_stage_imports():
    """Every module of every stage and the base imports on its own (a `__main__` would run its command)."""
    import importlib

    failed = []
    for name in sorted(_modules()):
        if name.endswith("__main__"):
            continue
        try:
            importlib.import_module(name)
        except Exception as error:  # noqa: BLE001 - name every module that fails, not the first
            failed.append(f"{name}: {type(error).__name__}: {error}")
    assert not failed, "modules that do not import:\n" + "\n".join(failed)
    assert len(_modules()) > 60  # the walk found the package's modules, not only its __init__ files


def test_the_package_never_names_scripts():
    """The library runs its commands as modules (`python -m audience.cli.train`): no file of the package names
    the repository's scripts/ folder, which an installed package does not have."""
    naming = [f"{path.relative_to(PACKAGE.parent)}:{number}" for path in sorted(PACKAGE.rglob("*.py"))
              for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
              if "scripts/" in line or '"scripts"' in line]
    assert not naming, "the package names scripts/ at " + ", ".join(naming)


def test_every_script_is_a_thin_wrapper_of_a_package_command():
    scripts = sorted((PACKAGE.parent / "scripts").glob("*.py"))
    assert scripts
    for script in scripts:
        text = script.read_text(encoding="utf-8")
        assert f"from audience.cli.{script.stem} import main" in text, script.name
        assert len(text.splitlines()) <= 15, f"{script.name} holds more than a wrapper"
        assert (PACKAGE / "cli" / script.name).is_file()


def test_the_environment_is_read_in_settings_only():
    """Every AUDIENCE_* variable the package names, and SPACE_ID, is listed in settings.py's docstring, and no
    other module reads them (os.environ.get, os.environ[...] or os.getenv beside such a name; setting them for a
    child process is no read)."""
    import re

    from audience import settings

    names, readers = set(), []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        names |= set(re.findall(r"\bAUDIENCE_[A-Z_]+[A-Z]\b", text))
        if path.name == "settings.py":
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            if re.search(r"os\.environ\.get\(|os\.environ\[|os\.getenv\(", line) and re.search(
                    r"AUDIENCE_|SPACE_ID|GRADIO_SERVER|ENV_", line):
                readers.append(f"{path.relative_to(PACKAGE.parent)}:{number}")
    listed = set(re.findall(r"^(AUDIENCE_[A-Z_]+|SPACE_ID)\b", settings.__doc__, flags=re.MULTILINE))
    assert len(names) >= 12 and names <= listed, f"not listed in settings.py: {sorted(names - listed)}"
    assert "SPACE_ID" in listed
    assert not readers, "the environment is read outside settings.py at " + ", ".join(readers)
