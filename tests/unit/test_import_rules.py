"""The architecture, checked like a type: which package may import which.

Walks every module's imports with ``ast`` (no extra dependency). The rules:
protocols are sans-IO and know nothing of the framework or the worker; the
framework knows no worker, master or settings machinery; the master never
imports the framework, the protocols, the worker runtime or a metrics
implementation (not even lazily); master and workers talk through the shared
``control`` package, which imports nothing from the package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "app_server"

# package prefix -> prefixes it must never import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "app_server.protocols": (
        "app_server.framework", "app_server.workers", "app_server.master",
        "app_server.settings", "app_server.cli", "app_server.metrics", "asyncio",
    ),
    "app_server.framework": (
        "app_server.workers", "app_server.master", "app_server.cli",
        "app_server.settings.sources", "app_server.settings.resolve",
    ),
    "app_server.master": (
        "app_server.framework", "app_server.protocols", "app_server.workers",
        "app_server.metrics.store", "app_server.metrics.recorder",
    ),
    # The master <-> worker protocol both sides share: a leaf.
    "app_server.control": (
        "app_server.framework", "app_server.protocols", "app_server.workers",
        "app_server.master", "app_server.metrics", "app_server.settings", "app_server.cli",
        "app_server.logs", "app_server.testing",
    ),
    "app_server.metrics.sink": ("app_server.",),
    # The worker speaks to the master through control/ only.
    "app_server.workers": ("app_server.master",),
    # The ASGI adapter conforms to the worker's contract (workers.app_contract)
    # and knows nothing of processes, settings or channels.
    "app_server.asgi": (
        "app_server.master", "app_server.cli", "app_server.ctl", "app_server.control",
        "app_server.settings", "app_server.channels", "app_server.metrics",
        "app_server.workers.http_protocol", "app_server.workers.ws_protocol",
    ),
    "app_server.settings": (
        "app_server.framework", "app_server.workers", "app_server.master",
        "app_server.protocols",
    ),
    # The ctl client: a small program that talks to the master's socket.
    "app_server.ctl": (
        "app_server.framework", "app_server.protocols", "app_server.workers",
        "app_server.metrics", "app_server.cli", "app_server.master.arbiter",
    ),
    "app_server.exceptions": ("app_server.",),
    # The master will keep the master backend's history with these two: they
    # must not pull in the framework, the workers or the rest of channels.
    "app_server.channels.history": (
        "app_server.channels", "app_server.framework", "app_server.workers",
        "app_server.protocols", "app_server.settings", "app_server.master",
    ),
    "app_server.channels.payload": ("app_server.",),
    "app_server.status": ("app_server.",),
}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _module_level(tree: ast.Module) -> list[ast.AST]:
    """Statements outside function bodies: what importing the module loads.

    An import inside a function (``App.run`` reaching the CLI) is lazy and
    allowed; it is loaded only when that function runs.
    """
    nodes: list[ast.AST] = []
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        nodes.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return nodes


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    package = module_name(path).rsplit(".", 1)[0]
    for node in _module_level(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                found.add(f"{base}.{node.module}" if node.module else base)
            elif node.module:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


MODULES = sorted(ROOT.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_module_respects_import_rules(path: Path) -> None:
    name = module_name(path)
    for owner, banned in FORBIDDEN.items():
        if name != owner and not name.startswith(owner + "."):
            continue
        bad = sorted(
            imported for imported in imports_of(path)
            for prefix in banned
            if imported == prefix.rstrip(".") or imported.startswith(prefix.rstrip(".") + ".")
            or (prefix.endswith(".") and imported.startswith(prefix))
        )
        assert not bad, f"{name} must not import {bad}"


def test_the_rules_see_real_imports() -> None:
    # Guard against a walker that silently finds nothing.
    found = imports_of(ROOT / "workers" / "http_protocol.py")
    assert "app_server.protocols.http.parser" in found
    assert "asyncio" in found


def imports_anywhere(path: Path) -> set[str]:
    """Every module ``path`` imports, inside functions too (lazy imports count)."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


# Not even lazily: the master gets its metrics implementation from cli, and the
# control protocol is a leaf both sides share.
NEVER_EVEN_LAZILY: dict[str, tuple[str, ...]] = {
    "master": ("app_server.framework", "app_server.protocols", "app_server.workers",
               "app_server.metrics.store", "app_server.metrics.recorder", "prometheus_client"),
    "control": ("app_server.",),
}


@pytest.mark.parametrize("package", sorted(NEVER_EVEN_LAZILY))
def test_master_and_control_imports_inside_functions_too(package: str) -> None:
    bad = sorted(
        f"{path.name}: {imported}"
        for path in (ROOT / package).rglob("*.py")
        for imported in imports_anywhere(path)
        for prefix in NEVER_EVEN_LAZILY[package]
        if imported.startswith(prefix) and not imported.startswith(f"app_server.{package}")
    )
    assert not bad, f"{package} must not import {bad}"


def test_master_and_workers_share_the_control_package() -> None:
    # Both sides speak the protocol from control/, not from each other.
    assert "app_server.control" in imports_of(ROOT / "workers" / "supervised.py")
    assert "app_server.control" in imports_of(ROOT / "master" / "arbiter.py")
    assert not (ROOT / "master" / "control.py").exists()


def test_public_names_are_all_importable() -> None:
    import app_server

    for name in app_server.__all__:
        assert getattr(app_server, name) is not None, name
