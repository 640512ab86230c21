"""The import graph of ``app_server``, read with ``ast`` (no extra dependency).

Shared by the import-rule and the import-cycle tests. Every import counts:
module level, inside ``if TYPE_CHECKING:`` and inside functions, because each
is a dependency of the module whether or not it runs at import time.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "app_server"


@dataclass(frozen=True, slots=True)
class Import:
    """One imported module (or ``module.name``) of one source file."""

    target: str
    line: int
    lazy: bool  # inside a function body: loaded only when the function runs
    # ``a`` of ``from a import b``: a dependency only when ``a.b`` is not itself
    # a module (``from app_server import control`` depends on control, not on
    # the package's ``__init__``).
    from_base: bool = False


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> list[Path]:
    return sorted(ROOT.rglob("*.py"))


def _absolute(path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module_name(path)
    if path.name != "__init__.py":
        package = package.rsplit(".", 1)[0]
    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
    return f"{base}.{node.module}" if node.module else base


def _walk(node: ast.AST, lazy: bool, path: Path, out: list[Import]) -> None:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import):
            out.extend(Import(alias.name, child.lineno, lazy) for alias in child.names)
        elif isinstance(child, ast.ImportFrom):
            module = _absolute(path, child)
            out.append(Import(module, child.lineno, lazy, from_base=True))
            out.extend(Import(f"{module}.{a.name}", child.lineno, lazy) for a in child.names)
        inner = lazy or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        _walk(child, inner, path, out)


@cache
def imports_of(path: Path) -> tuple[Import, ...]:
    """Every import in ``path``, ``from a import b`` giving both ``a`` and ``a.b``."""
    out: list[Import] = []
    _walk(ast.parse(path.read_text(), str(path)), False, path, out)
    return tuple(out)


@cache
def module_names() -> frozenset[str]:
    return frozenset(module_name(p) for p in all_modules())


def internal(found: tuple[Import, ...]) -> list[Import]:
    """The imports of ``app_server`` modules among ``found``: ``from a import b``
    counts as ``a.b`` when ``b`` is a module, and as ``a`` otherwise."""
    modules = module_names()
    kept = []
    for imp in found:
        if imp.target not in modules:
            continue
        if imp.from_base:
            named = [
                other.target
                for other in found
                if not other.from_base
                and other.line == imp.line
                and other.target.rsplit(".", 1)[0] == imp.target
            ]
            if named and all(target in modules for target in named):
                continue
        kept.append(imp)
    return kept


def internal_graph() -> dict[str, set[str]]:
    """module -> the ``app_server`` modules it imports, lazily or not."""
    graph: dict[str, set[str]] = {}
    for path in all_modules():
        name = module_name(path)
        graph[name] = {imp.target for imp in internal(imports_of(path)) if imp.target != name}
    return graph
