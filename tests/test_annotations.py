"""Every public function and method of the package is annotated: each parameter but
``self``/``cls`` and the return (``__init__``: its parameters). mypy checks the bodies."""
import ast
import os
from typing import Iterator, List, Tuple, Union

from conftest import ROOT

FunctionNode = Union[ast.FunctionDef, ast.AsyncFunctionDef]


def _public(name: str) -> bool:
    return not name.startswith("_")


def _is_static(node: FunctionNode) -> bool:
    return any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in node.decorator_list)


def _missing(node: FunctionNode, method: bool) -> List[str]:
    """What ``node`` lacks: parameter names, and ``return``."""
    args = node.args
    positional = args.posonlyargs + args.args
    if method and not _is_static(node):
        positional = positional[1:]  # self or cls
    params = positional + args.kwonlyargs + [a for a in (args.vararg, args.kwarg) if a]
    missing = [a.arg for a in params if a.annotation is None]
    if node.returns is None and node.name != "__init__":
        missing.append("return")
    return missing


def _public_defs(body: List[ast.stmt],
                 method: bool = False) -> Iterator[Tuple[FunctionNode, bool]]:
    """``(node, is_method)`` of the public functions and methods in ``body``, public
    classes' bodies included (nested functions are not API)."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if _public(node.name) or (method and node.name == "__init__"):
                yield node, method
        elif isinstance(node, ast.ClassDef) and _public(node.name):
            yield from _public_defs(node.body, method=True)
        elif isinstance(node, (ast.If, ast.Try)):  # e.g. defs under `if TYPE_CHECKING:`
            yield from _public_defs(node.body, method)


def offenders(source: str, filename: str = "<string>") -> List[str]:
    """``file:line name: missing ...`` for each public def lacking an annotation."""
    out = []
    for node, method in _public_defs(ast.parse(source, filename).body):
        missing = _missing(node, method)
        if missing:
            out.append(f"{filename}:{node.lineno} {node.name}: missing {', '.join(missing)}")
    return out


def package_offenders() -> List[str]:
    """:func:`offenders` of every module of ``genetic_dl/``."""
    package = os.path.join(ROOT, "genetic_dl")
    out = []
    for folder, _, files in sorted(os.walk(package)):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as f:
                    out += offenders(f.read(), os.path.relpath(path, ROOT))
    return out


SAMPLE = '''
def bare(a, b=1):
    pass

def partial(a: int, *rest, key=None) -> int:
    return a

def no_return(a: int):
    pass

def fine(a: int, *rest: int, key: str = "", **more: float) -> None:
    def nested(x):  # not API
        pass

def _private(a):
    pass

class Public:
    def __init__(self, size):
        pass

    def method(self, x: int):
        pass

    @staticmethod
    def static(x) -> int:
        return x

    @classmethod
    def build(cls, x: int) -> "Public":
        return cls(x)

    @property
    def size(self):
        return 1

    def __call__(self, x):  # dunders other than __init__ are not checked
        pass

    def _helper(self, x):
        pass

class _Private:
    def method(self, x):
        pass
'''


def test_the_checker_finds_every_unannotated_public_def():
    """Missing parameters and returns are found; private, nested, self/cls and dunders
    other than ``__init__`` are not checked."""
    found = offenders(SAMPLE, "sample.py")
    assert found == [
        "sample.py:2 bare: missing a, b, return",
        "sample.py:5 partial: missing key, rest",
        "sample.py:8 no_return: missing return",
        "sample.py:19 __init__: missing size",
        "sample.py:22 method: missing return",
        "sample.py:26 static: missing x",
        "sample.py:34 size: missing return",
    ], found


def test_every_public_function_and_method_is_annotated():
    """The offenders are printed, one ``file:line name: missing ...`` per line."""
    found = package_offenders()
    print("\n".join(found))
    assert not found, f"{len(found)} public def(s) lack annotations:\n" + "\n".join(found)
