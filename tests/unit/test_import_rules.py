"""The architecture, checked like a type: which module may import which.

STYLE.md §3 gives each package what it *may* import; the README's
architecture section says where our layout differs from STYLE's proposal
(``application.py`` holds ``App.run``, ``control/`` is the shared master <->
worker protocol, ``channels/`` the pub/sub package). Every import counts:
module level, under ``TYPE_CHECKING`` and inside functions. An import inside a
function is allowed only where laziness is the design, each listed in
``LAZY_BY_DESIGN`` with its reason. Reads the source with ``ast`` (no extra
dependency, nothing imported).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.unit.import_graph import ROOT, Import, all_modules, imports_of, internal, module_name

# Each rule: module prefix -> (the app_server prefixes it may import besides
# its own package, why). The most specific prefix applies. A module always may
# import its own package's modules (``app_server.framework.*`` inside framework).
LEAF = ()
MAY_IMPORT: dict[str, tuple[tuple[str, ...], str]] = {
    # Leaves: everyone may import them, they import nothing of ours.
    "app_server.exceptions": (LEAF, "the public exception hierarchy is a leaf"),
    "app_server.status": (LEAF, "status and close codes are a leaf"),
    "app_server.logs": (LEAF, "logging setup is a leaf both processes use"),
    "app_server.control": (
        LEAF,
        "the master <-> worker protocol: both sides import it, so it imports neither",
    ),
    "app_server.settings.schema": (LEAF, "the one schema is a leaf"),
    "app_server.settings.model": (LEAF, "the frozen views are a leaf handed to every part"),
    "app_server.settings.sources": (
        ("app_server.settings.schema",),
        "the layers are parsed from the schema",
    ),
    "app_server.settings": (
        ("app_server.settings",),
        "the resolver merges the layers into the model",
    ),
    "app_server.metrics.sink": (LEAF, "the interfaces worker and master report to"),
    "app_server.metrics": (
        ("app_server.metrics",),
        "implementations know the sink and each other, nothing else",
    ),
    # Sans-IO: bytes and events only.
    "app_server.protocols": (
        ("app_server.protocols", "app_server.status", "app_server.exceptions"),
        "sans-IO: protocol rules know no framework, worker or settings machinery; "
        "status (CloseCode) and exceptions (InvalidWebSocketStateError) are leaves "
        "with no machinery",
    ),
    # The framework: HTTP semantics, no sockets, processes or metrics.
    "app_server.framework": (
        (
            "app_server.exceptions",
            "app_server.status",
            "app_server.protocols.http.events",
            "app_server.protocols.websocket.lifecycle",
            "app_server.settings.schema",
        ),
        "the framework sees the protocols' data types only (the HTTP events, the "
        "WebSocket state enum it reads), and the schema to read app.config keys; "
        "never the worker, the master or the CLI",
    ),
    "app_server.framework.app": (
        (
            "app_server.framework",
            "app_server.exceptions",
            "app_server.status",
            "app_server.protocols.http.events",
            "app_server.channels.facade",
        ),
        "the App exposes app.channels, the public face of the pub/sub package",
    ),
    # The worker: protocols glued to the app through one seam.
    "app_server.workers": (
        (
            "app_server.protocols",
            "app_server.control",
            "app_server.settings.model",
            "app_server.metrics.sink",
            "app_server.logs",
            "app_server.exceptions",
            "app_server.status",
        ),
        "the worker reaches the app only through workers.app_contract and the master "
        "only through control",
    ),
    "app_server.workers.app_contract": (
        ("app_server.framework", "app_server.protocols.http.events"),
        "the one seam where the worker names the framework's value types",
    ),
    "app_server.workers.entry": (
        (
            "app_server.protocols",
            "app_server.control",
            "app_server.settings",
            "app_server.metrics",
            "app_server.logs",
            "app_server.channels.runtime",
            "app_server.asgi",
        ),
        "the worker's composition: resolves worker settings, picks the metrics "
        "implementation and the channel backend, and wraps an ASGI app in the adapter",
    ),
    "app_server.workers.supervised": (
        (
            "app_server.protocols",
            "app_server.control",
            "app_server.settings.model",
            "app_server.metrics.sink",
            "app_server.logs",
            "app_server.channels.runtime",
        ),
        "the forked child's main: it hands the master's relay socket to the channel "
        "backend before the app is imported",
    ),
    # The master: processes and sockets, never the app.
    "app_server.master": (
        (
            "app_server.control",
            "app_server.settings.model",
            "app_server.metrics.sink",
            "app_server.logs",
            "app_server.status",
            "app_server.exceptions",
            "app_server.channels.history",
            "app_server.channels.payload",
        ),
        "the master never loads the framework, the protocols, the workers or a metrics "
        "implementation (cli picks it); exceptions, and channels' history and payload, "
        "are leaves it may keep",
    ),
    "app_server.channels.history": (("app_server.exceptions",), "a leaf the master may use"),
    "app_server.channels.payload": (LEAF, "a leaf the master may use"),
    "app_server.channels": (
        (
            "app_server.exceptions",
            "app_server.status",
            "app_server.framework.websocket",
            "app_server.protocols.websocket.frames",
            "app_server.control.relay",
        ),
        "pub/sub delivers to the framework's WebSocket; the master backend speaks the "
        "relay protocol of control, the package both sides share",
    ),
    "app_server.asgi": (
        (
            "app_server.workers.app_contract",
            "app_server.protocols.http.events",
            "app_server.exceptions",
            "app_server.status",
        ),
        "an ASGI app is hosted behind the worker's AppHandler seam",
    ),
    "app_server.testing": (
        (
            "app_server.framework",
            "app_server.workers",
            "app_server.protocols",
            "app_server.channels",
            "app_server.settings.model",
            "app_server.exceptions",
            "app_server.status",
        ),
        "the in-process client runs the worker's own protocol code",
    ),
    "app_server.ctl": (
        (
            "app_server.settings.schema",
            "app_server.settings.sources",
            "app_server.master.ctl_server",
        ),
        "the ctl client speaks the master's control-socket protocol and nothing else",
    ),
    "app_server.cli": (("app_server",), "the composition root sees everything"),
    "app_server.application": (
        ("app_server.framework.app", "app_server.cli"),
        "the framework's App plus run()",
    ),
    "app_server.__main__": (("app_server.cli",), "python -m app_server runs the CLI"),
    "app_server": (
        (
            "app_server.application",
            "app_server.framework",
            "app_server.exceptions",
            "app_server.status",
        ),
        "the public names, loaded lazily (PEP 562)",
    ),
}

# Standard-library and third-party modules a package must never import.
NEVER: dict[str, tuple[tuple[str, ...], str]] = {
    "app_server.protocols": (
        (
            "asyncio",
            "socket",
            "selectors",
            "ssl",
            "time",
            "logging",
            "os",
            "threading",
            "signal",
            "subprocess",
            "prometheus_client",
            "psutil",
            "uvloop",
        ),
        "sans-IO: no loop, sockets, clocks (time is passed in) or logging",
    ),
    "app_server.framework": (
        (
            "socket",
            "selectors",
            "signal",
            "subprocess",
            "multiprocessing",
            "prometheus_client",
            "psutil",
            "uvloop",
            "httptools",
        ),
        "no sockets, processes or metrics in the framework",
    ),
    "app_server.master": (
        ("prometheus_client", "uvloop", "httptools", "wsproto"),
        "the master gets its metrics implementation from cli and never parses HTTP",
    ),
    "app_server.control": (
        ("asyncio", "prometheus_client", "psutil"),
        "a plain codec both sides can use",
    ),
}

# Imports inside functions, where being lazy is the design. (importer, imported
# prefix) -> reason. Any other import inside a function fails the test.
LAZY_BY_DESIGN: dict[tuple[str, str], str] = {
    (
        "app_server.asgi",
        "app_server.asgi.adapter",
    ): "the probe only judges an app's interface; the adapter (and the worker types it "
    "brings) loads only where an ASGI app is served",
    (
        "app_server.cli",
        "app_server.asgi",
    ): "the forked probe and the workers judge the imported app's interface; the "
    "master itself never loads the ASGI adapter",
    (
        "app_server.application",
        "app_server.cli",
    ): "App.run needs the CLI; importing an App must not load cli, master and workers",
    (
        "app_server.cli",
        "app_server.workers",
    ): "STYLE §3: the composition root imports the worker only in the child "
    "(and to preload the app)",
    (
        "app_server.cli",
        "app_server.master",
    ): "only the serving path builds the master; ctl and config checks do not load it",
    ("app_server.cli", "app_server.ctl"): "only the ctl subcommand runs the ctl client",
    (
        "app_server.cli",
        "app_server.metrics.store",
    ): "prometheus_client is loaded only when --metrics-bind is set",
    (
        "app_server.channels.runtime",
        "app_server.channels.redis",
    ): "redis is the optional [redis] extra, imported for a redis:// backend only",
    (
        "app_server.workers.entry",
        "uvloop",
    ): "falls back to the asyncio loop when uvloop cannot be imported",
    ("app_server.master.children", "psutil"): "read only when --max-memory is set",
    ("app_server.master.scrape", "psutil"): "read only when a scrape asks",
    ("app_server.master.ctl_server", "psutil"): "read only when ctl asks for workers",
}


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _rule_for(
    name: str, table: dict[str, tuple[tuple[str, ...], str]]
) -> tuple[str, tuple[str, ...], str] | None:
    owners = [owner for owner in table if _matches(name, owner)]
    if not owners:
        return None
    owner = max(owners, key=len)
    allowed, reason = table[owner]
    return owner, allowed, reason


def _own_package(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rsplit(".", 1)[0]


def layering_violations(path: Path, found: tuple[Import, ...] | None = None) -> list[str]:
    name = module_name(path)
    found = imports_of(path) if found is None else found
    rule = _rule_for(name, MAY_IMPORT)
    assert rule is not None, f"{name} has no import rule: add one to MAY_IMPORT"
    owner, allowed, reason = rule
    own = _own_package(name, path)
    bad = []
    for imp in internal(found):
        if _matches(imp.target, own) and own != "app_server":
            continue
        if any(_matches(imp.target, prefix) for prefix in allowed):
            continue
        bad.append(f"{name}:{imp.line} imports {imp.target} ({owner}: {reason})")
    return bad


def forbidden_libraries(path: Path, found: tuple[Import, ...] | None = None) -> list[str]:
    name = module_name(path)
    found = imports_of(path) if found is None else found
    rule = _rule_for(name, NEVER)
    if rule is None:
        return []
    owner, banned, reason = rule
    return [
        f"{name}:{imp.line} imports {imp.target} ({owner}: {reason})"
        for imp in found
        if any(_matches(imp.target, lib) for lib in banned)
    ]


def unlisted_lazy_imports(path: Path, found: tuple[Import, ...] | None = None) -> list[str]:
    name = module_name(path)
    found = imports_of(path) if found is None else found
    bad: dict[int, str] = {}  # one per statement: ``from a import b`` names ``a`` first
    for imp in found:
        if (
            not imp.lazy
            or imp.line in bad
            or any(
                name == importer and _matches(imp.target, prefix)
                for importer, prefix in LAZY_BY_DESIGN
            )
        ):
            continue
        bad[imp.line] = f"{name}:{imp.line} imports {imp.target} inside a function"
    return sorted(bad.values())


ENFORCED = list(all_modules())


@pytest.mark.parametrize("path", ENFORCED, ids=module_name)
def test_module_imports_only_what_its_layer_may(path: Path) -> None:
    bad = layering_violations(path) + forbidden_libraries(path)
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path", ENFORCED, ids=module_name)
def test_imports_inside_functions_are_lazy_by_design(path: Path) -> None:
    bad = unlisted_lazy_imports(path)
    assert not bad, "\n".join(bad) + "\n(add it to LAZY_BY_DESIGN with its reason, or move it)"


def test_every_lazy_import_listed_is_still_there() -> None:
    # The allow-list stays short: an entry whose import has gone is removed.
    lazy = {
        (module_name(p), imp.target) for p in all_modules() for imp in imports_of(p) if imp.lazy
    }
    stale = [
        entry
        for entry in LAZY_BY_DESIGN
        if not any(who == entry[0] and _matches(what, entry[1]) for who, what in lazy)
    ]
    assert not stale, f"LAZY_BY_DESIGN entries with no such import: {stale}"


def test_the_rules_see_real_imports() -> None:
    # Guard against a walker that silently finds nothing, or misses lazy and
    # type-only imports.
    targets = {imp.target: imp for imp in imports_of(ROOT / "workers" / "http_protocol.py")}
    assert "app_server.protocols.http.parser" in targets
    assert "asyncio" in targets
    run = {imp.target: imp for imp in imports_of(ROOT / "application.py")}
    assert run["app_server.cli"].lazy
    typed = {imp.target for imp in imports_of(ROOT / "framework" / "request.py")}
    assert "app_server.framework.routing.router" in typed  # under TYPE_CHECKING


def test_a_violation_is_reported() -> None:
    # The rules can fail: a protocol module that imports the framework and a
    # socket, both lazily, is caught by all three checks.
    probe = ROOT / "protocols" / "http" / "probe.py"  # not written: only its name is used
    found = (
        Import("socket", 2, lazy=True),
        Import("app_server.framework", 3, lazy=True, from_base=True),
        Import("app_server.framework.app", 3, lazy=True),
    )
    assert layering_violations(probe, found) == [
        "app_server.protocols.http.probe:3 imports app_server.framework.app "
        "(app_server.protocols: " + MAY_IMPORT["app_server.protocols"][1] + ")"
    ]
    assert forbidden_libraries(probe, found) == [
        "app_server.protocols.http.probe:2 imports socket (app_server.protocols: "
        + NEVER["app_server.protocols"][1]
        + ")"
    ]
    assert unlisted_lazy_imports(probe, found) == [
        "app_server.protocols.http.probe:2 imports socket inside a function",
        "app_server.protocols.http.probe:3 imports app_server.framework inside a function",
    ]


def test_the_master_process_loads_no_framework() -> None:
    # STYLE §3: without --preload the master has no framework or worker module.
    import subprocess

    probe = (
        "import sys, app_server.cli, app_server.master.arbiter;"
        "print([m for m in sys.modules if m.startswith(('app_server.framework',"
        "'app_server.workers', 'app_server.protocols'))])"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT.parent
    )
    assert out.stdout.strip() == "[]", out.stdout


def test_master_and_workers_share_the_control_package() -> None:
    # Both sides speak the protocol from control/, not from each other.
    for side in ("workers/supervised.py", "master/arbiter.py"):
        assert "app_server.control" in {i.target for i in imports_of(ROOT / side)}
    assert not (ROOT / "master" / "control.py").exists()


def test_the_master_relay_speaks_the_shared_protocol_without_the_framework() -> None:
    import subprocess
    import sys

    # The master's relay and the worker's backend speak control.relay; the
    # master's history is channels.history. Loading the master loads no
    # framework, protocol, worker or worker-side channel module.
    relay = {i.target for i in imports_of(ROOT / "master" / "relay.py")}
    backend = {i.target for i in imports_of(ROOT / "channels" / "master_backend.py")}
    assert "app_server.control.relay" in relay and "app_server.channels.history" in relay
    assert "app_server.control.relay" in backend
    code = (
        "import sys, app_server.master.arbiter; "
        "print(sorted(m for m in sys.modules if m.startswith(('app_server.framework', "
        "'app_server.protocols', 'app_server.workers', 'app_server.channels.hub', "
        "'app_server.channels.backend'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_public_names_are_all_importable() -> None:
    import app_server

    for name in app_server.__all__:
        assert getattr(app_server, name) is not None, name
