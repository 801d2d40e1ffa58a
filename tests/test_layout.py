"""The package's layout: its subpackages are layers, each importing only the layers
below it (checked on the source, so imports inside functions and under
``if TYPE_CHECKING:`` count too); the application (CLI, run directory, reports,
checkpoints) is a thin client that nothing in the library imports; few modules at
the top, none over 500 lines; the tests mirror the subpackages.

The checker runs on the real tree and, to show it can fail, on small fake trees.
"""
import ast
import os

import pytest

from conftest import ROOT

PACKAGE_DIR = os.path.join(ROOT, "genetic_dl")
TESTS_DIR = os.path.join(ROOT, "tests")

BELOW_WEIGHTS = {"core", "data", "errors", "operators"}
# the layers each layer may import (its own included); a module in no layer fails the check
ALLOWED = {
    "errors": {"errors"},
    "data": {"data", "errors"},
    "core": {"core", "data", "errors"},
    "operators": BELOW_WEIGHTS,
    "weights": BELOW_WEIGHTS | {"weights"},
    "search": BELOW_WEIGHTS | {"weights", "search"},
    "integrations": BELOW_WEIGHTS | {"weights", "search", "integrations"},
    "app": BELOW_WEIGHTS | {"weights", "search", "integrations", "app"},
}
# the package's __init__.py and __main__.py assemble the public API and the CLI
EXEMPT = {("genetic_dl",), ("genetic_dl", "__main__")}
MAX_TOP_LEVEL_FILES = 6
MAX_LINES = 500
# test folders for code outside the package: the folder mirrors this folder of the repo
OUTSIDE_PACKAGE = {"benchmarks"}


def modules(package_dir):
    """(dotted name as a tuple, path, is a package) of every module under package_dir."""
    parent = os.path.dirname(package_dir)
    for folder, dirs, files in os.walk(package_dir):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        here = tuple(os.path.relpath(folder, parent).split(os.sep))
        for name in sorted(files):
            if name.endswith(".py"):
                is_package = name == "__init__.py"
                yield (here if is_package else here + (name[:-3],),
                       os.path.join(folder, name), is_package)


def _exists(package_dir, dotted):
    path = os.path.join(os.path.dirname(package_dir), *dotted)
    return os.path.isdir(path) or os.path.isfile(path + ".py")


def _import_module_string(node):
    """The constant name passed to importlib.import_module / __import__, if any."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    if name in ("import_module", "__import__") and node.args:
        arg = node.args[0]
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            return arg.value
    return None


def imports(package_dir, dotted, path, is_package):
    """(line, imported module of the library as a tuple) for every import in the source at
    path: relative ones resolved against the module's package, absolute ``genetic_dl.``
    ones, and constant names given to importlib. ``from X import name`` names X.name when
    that is a module, else X. A relative import above the top yields (line, None)."""
    root = os.path.basename(package_dir)
    package = dotted if is_package else dotted[:-1]
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, tuple(a.name.split("."))) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level > len(package):
                found.append((node.lineno, None))
                continue
            base = package[:len(package) - node.level + 1] if node.level else ()
            target = base + tuple((node.module or "").split(".") if node.module else ())
            for alias in node.names:
                sub = target + (alias.name,)
                found.append((node.lineno, sub if _exists(package_dir, sub) else target))
        elif isinstance(node, ast.Call):
            name = _import_module_string(node)
            if name:
                found.append((node.lineno, tuple(name.split("."))))
    return [(line, target) for line, target in found if target is None or target[0] == root]


def layer_of(dotted):
    """The layer of a module: its subpackage, or the top module's name; the package itself
    (its __init__, which imports everything) is the layer ``genetic_dl``."""
    return dotted[1] if len(dotted) > 1 else dotted[0]


def layering_violations(package_dir, allowed=None):
    """'path:line (layer) imports module (layer)' for every import across the layers that
    ``allowed`` does not allow, and for every module in no layer."""
    allowed = ALLOWED if allowed is None else allowed
    parent = os.path.dirname(package_dir)
    found = []
    for dotted, path, is_package in modules(package_dir):
        if dotted in EXEMPT:
            continue
        rel = os.path.relpath(path, parent)
        layer = layer_of(dotted)
        if layer not in allowed:
            found.append(f"{rel} is in no layer (declare what its layer may import)")
            continue
        for line, target in imports(package_dir, dotted, path, is_package):
            if target is None:
                found.append(f"{rel}:{line} imports above the top of the package")
            elif layer_of(target) not in allowed[layer]:
                found.append(f"{rel}:{line} ({layer}) imports {'.'.join(target)} "
                             f"({layer_of(target)})")
    return found


def application_importers(package_dir):
    """'path:line imports module' for every module outside app/ (and not exempt) that
    imports the application."""
    parent = os.path.dirname(package_dir)
    return [f"{os.path.relpath(path, parent)}:{line} imports {'.'.join(target)}"
            for dotted, path, is_package in modules(package_dir)
            if dotted not in EXEMPT and layer_of(dotted) != "app"
            for line, target in imports(package_dir, dotted, path, is_package)
            if target is not None and layer_of(target) == "app"]


def top_level_files(package_dir):
    return sorted(name for name in os.listdir(package_dir) if name.endswith(".py"))


def oversized(package_dir, max_lines=MAX_LINES):
    """'path: lines' of every module over max_lines lines."""
    parent = os.path.dirname(package_dir)
    found = []
    for _, path, _ in modules(package_dir):
        with open(path, encoding="utf-8") as handle:
            lines = len(handle.readlines())
        if lines > max_lines:
            found.append(f"{os.path.relpath(path, parent)}: {lines} lines")
    return found


def unmirrored_test_folders(tests_dir, package_dir):
    """The folders under tests_dir that mirror no subpackage of package_dir (nor a folder
    of the repo named in OUTSIDE_PACKAGE)."""
    found = []
    for folder, dirs, _ in os.walk(tests_dir):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        rel = os.path.relpath(folder, tests_dir)
        if rel == ".":
            continue
        parts = rel.split(os.sep)
        if parts[0] in OUTSIDE_PACKAGE:
            mirrored = os.path.isdir(os.path.join(os.path.dirname(package_dir), *parts))
        else:
            mirrored = os.path.isfile(os.path.join(package_dir, *parts, "__init__.py"))
        if not mirrored:
            found.append(rel)
    return found


# --- the real tree ---


def test_layers_import_only_the_layers_below_them():
    layers = {layer_of(dotted) for dotted, _, _ in modules(PACKAGE_DIR) if len(dotted) > 1}
    assert set(ALLOWED) - {"errors"} <= layers  # every layer is there to check
    violations = layering_violations(PACKAGE_DIR)
    assert not violations, "imports across the layers:\n" + "\n".join(violations)


def test_no_library_module_imports_the_application():
    checked = [d for d, _, _ in modules(PACKAGE_DIR) if d not in EXEMPT and layer_of(d) != "app"]
    assert len(checked) > 20
    importers = application_importers(PACKAGE_DIR)
    assert not importers, "the library imports the application:\n" + "\n".join(importers)


def test_few_modules_at_the_top():
    files = top_level_files(PACKAGE_DIR)
    assert "__init__.py" in files
    assert len(files) <= MAX_TOP_LEVEL_FILES, files


def test_no_module_over_500_lines():
    assert len(list(modules(PACKAGE_DIR))) > 40
    over = oversized(PACKAGE_DIR)
    assert not over, f"modules over {MAX_LINES} lines:\n" + "\n".join(over)


def test_test_folders_mirror_the_subpackages():
    folders = [d for d in os.listdir(TESTS_DIR) if os.path.isdir(os.path.join(TESTS_DIR, d))]
    assert {"core", "search", "weights"} <= set(folders)
    unmirrored = unmirrored_test_folders(TESTS_DIR, PACKAGE_DIR)
    assert not unmirrored, f"test folders that mirror no subpackage: {unmirrored}"


# --- the checker on fake trees ---


def _tree(root, files):
    for rel, text in files.items():
        path = os.path.join(root, *rel.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
    return os.path.join(root, "genetic_dl")


# a tree that follows the rules, in every form of import the checker resolves
CLEAN = {
    "genetic_dl/__init__.py": "from .app import cli\nimport genetic_dl.search.s\n",
    "genetic_dl/__main__.py": "from .app.cli import main\n",
    "genetic_dl/errors.py": "",
    "genetic_dl/data/__init__.py": "from . import d\nfrom .d import load\n",
    "genetic_dl/data/d.py": "from ..errors import fail\nfrom .. import errors\n",
    "genetic_dl/core/__init__.py": "",
    "genetic_dl/core/c.py": "from ..data import d\nfrom . import c2\nimport genetic_dl.data.d\n",
    "genetic_dl/core/c2.py": "def f():\n    from genetic_dl.errors import check\n",
    "genetic_dl/operators/__init__.py": "",
    "genetic_dl/operators/o.py": "from ..core.c import x\n",
    "genetic_dl/weights/__init__.py": "from .rules import r\n",
    "genetic_dl/weights/loop.py": "from ..operators import o\n",
    "genetic_dl/weights/rules/__init__.py": "from . import r\n",
    "genetic_dl/weights/rules/r.py": "from .. import loop\nfrom ...core import c\n",
    "genetic_dl/search/__init__.py": "",
    "genetic_dl/search/s.py": "from ..weights.rules.r import R\n",
    "genetic_dl/integrations/__init__.py": "",
    "genetic_dl/integrations/i.py": "from ..search import s\nimport optuna\n",
    "genetic_dl/app/__init__.py": "",
    "genetic_dl/app/cli.py": "from . import rundir\nfrom ..integrations import i\n",
    "genetic_dl/app/rundir.py": "import json\n",
}


def test_checker_passes_a_tree_that_follows_the_rules(tmp_path):
    package = _tree(tmp_path, CLEAN)
    assert layering_violations(package) == []
    assert application_importers(package) == []
    assert oversized(package) == []
    assert len(top_level_files(package)) == 3


def test_checker_resolves_relative_and_absolute_imports(tmp_path):
    package = _tree(tmp_path, CLEAN)
    found = {"/".join(dotted): {target for _, target in imports(package, dotted, path, is_pkg)}
             for dotted, path, is_pkg in modules(package)}
    assert found["genetic_dl/data"] == {("genetic_dl", "data", "d")}
    assert found["genetic_dl/data/d"] == {("genetic_dl", "errors")}
    assert found["genetic_dl/core/c"] == {("genetic_dl", "data", "d"),
                                          ("genetic_dl", "core", "c2")}
    assert found["genetic_dl/core/c2"] == {("genetic_dl", "errors")}
    assert found["genetic_dl/weights/rules/r"] == {("genetic_dl", "weights", "loop"),
                                                   ("genetic_dl", "core", "c")}
    assert found["genetic_dl/integrations/i"] == {("genetic_dl", "search", "s")}


@pytest.mark.parametrize("rel, text, culprit", [
    ("genetic_dl/core/x.py", "from ..weights import loop\n", "(core) imports genetic_dl.weights"),
    ("genetic_dl/core/x.py", "from .. import operators\n", "(core) imports genetic_dl.operators"),
    ("genetic_dl/data/x.py", "def f():\n    from ..core import c\n", "(data) imports"),
    ("genetic_dl/data/__init__.py", "from ..core.c import y\n", "(data) imports genetic_dl.core"),
    ("genetic_dl/operators/x.py", "import genetic_dl.weights.loop\n", "(operators) imports"),
    ("genetic_dl/operators/x.py", "from genetic_dl.search import s\n", "(operators) imports"),
    ("genetic_dl/weights/rules/x.py", "from ...search.s import S\n", "(weights) imports"),
    ("genetic_dl/weights/x.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
     "    from ..search import s\n", "(weights) imports genetic_dl.search"),
    ("genetic_dl/search/x.py", "def f():\n    import genetic_dl.app.cli\n", "(search) imports"),
    ("genetic_dl/search/x.py", "from ..integrations import i\n", "(search) imports"),
    ("genetic_dl/integrations/x.py", "import importlib\n"
     "importlib.import_module('genetic_dl.app.rundir')\n", "(integrations) imports"),
    ("genetic_dl/integrations/x.py", "from .. import Stream\n", "imports genetic_dl (genetic_dl)"),
    ("genetic_dl/errors.py", "from .data import d\n", "(errors) imports genetic_dl.data"),
    ("genetic_dl/core/x.py", "from ... import y\n", "above the top"),
    ("genetic_dl/newlayer/__init__.py", "", "genetic_dl/newlayer/__init__.py is in no layer"),
])
def test_checker_finds_an_import_across_the_layers(tmp_path, rel, text, culprit):
    package = _tree(tmp_path, {**CLEAN, rel: text})
    violations = layering_violations(package)
    assert len(violations) == 1, violations
    assert violations[0].startswith(rel.replace("/", os.sep)) and culprit in violations[0]


@pytest.mark.parametrize("rel, text", [
    ("genetic_dl/core/x.py", "from ..app import rundir\n"),
    ("genetic_dl/weights/rules/x.py", "def f():\n    from ...app.cli import main\n"),
    ("genetic_dl/integrations/x.py", "from genetic_dl import app\n"),
    ("genetic_dl/errors.py", "from .app import cli\n"),
])
def test_checker_finds_a_library_module_that_imports_the_application(tmp_path, rel, text):
    package = _tree(tmp_path, {**CLEAN, rel: text})
    importers = application_importers(package)
    assert len(importers) == 1 and importers[0].startswith(rel.replace("/", os.sep)), importers


def test_checker_counts_top_level_files_and_long_modules(tmp_path):
    extra = {f"genetic_dl/m{i}.py": "" for i in range(4)}
    extra["genetic_dl/core/long.py"] = "x = 1\n" * (MAX_LINES + 1)
    extra["genetic_dl/core/c2.py"] = "x = 1\n" * MAX_LINES
    package = _tree(tmp_path, {**CLEAN, **extra})
    assert len(top_level_files(package)) == MAX_TOP_LEVEL_FILES + 1
    assert oversized(package) == [os.path.join("genetic_dl", "core", "long.py")
                                  + f": {MAX_LINES + 1} lines"]


def test_checker_finds_a_test_folder_that_mirrors_no_subpackage(tmp_path):
    package = _tree(tmp_path, CLEAN)
    tests = tmp_path / "tests"
    for folder in ["core", "weights/rules", "search", "engine", "weights/loop",
                   "benchmarks", "examples"]:
        (tests / folder).mkdir(parents=True)
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "examples").mkdir()  # a folder of the repo, but not one the tests may mirror
    assert sorted(unmirrored_test_folders(str(tests), package)) == [
        "engine", "examples", os.path.join("weights", "loop")]
