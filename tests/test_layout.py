"""The library does not depend on the application (CLI, run directory, reports,
checkpoints): those are thin clients of it."""
import ast
import os

from conftest import ROOT

APPLICATION = {"cli", "rundir", "report", "checkpoint", "__main__"}


def _imported_siblings(path):
    tree = ast.parse(open(path, encoding="utf-8").read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level >= 1:
            if node.module:
                names.add(node.module.split(".")[0])
            else:
                names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("genetic_dl."):
            names.add(node.module.split(".")[1])
    return names


def test_no_library_module_imports_the_application():
    package = os.path.join(ROOT, "genetic_dl")
    checked = 0
    for folder, _, files in os.walk(package):
        for name in files:
            module = name[:-3]
            if not name.endswith(".py") or module in APPLICATION or name == "__init__.py":
                continue
            used = _imported_siblings(os.path.join(folder, name)) & APPLICATION
            assert not used, f"{name} imports the application's {sorted(used)}"
            checked += 1
    assert checked > 20
