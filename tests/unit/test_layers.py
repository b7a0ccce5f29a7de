"""The package's shape (README, Architecture): Face -> Flows -> Runtime -> Domain ->
Doors. A module imports only from its own layer or below, and no import cycle exists,
lazy imports included."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "theiaos_pkg"
LAYERS = {
    "face": {"cli", "hooks", "__main__"},
    "flows": {"configure", "images", "backup", "tokens", "status", "doctor", "dashboard"},
    "runtime": {"runtime", "service", "manual"},
    "domain": {"settings", "container", "quadlet", "gateway", "subids", "account", "envfile",
               "logindefs", "podman", "podstore", "health", "journal", "state", "data"},
    "doors": {"run", "pty_relay", "files", "bus", "binding", "errors", "__init__"},
}
RANK = {m: i for i, mods in enumerate(LAYERS.values()) for m in mods}


def graph() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for path in sorted(PKG.glob("*.py")):
        deps = out.setdefault(path.stem, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                for name in [node.module] if node.module else [a.name for a in node.names]:
                    dep = name.split(".")[0]
                    deps.add("__init__" if dep == "__version__" else dep)
    return out


def test_every_module_has_a_layer() -> None:
    assert set(graph()) == set(RANK), set(graph()) ^ set(RANK)


def test_no_module_imports_one_above_it() -> None:
    up = [f"{a} -> {b}" for a, deps in graph().items() for b in deps if RANK[b] < RANK[a]]
    assert up == []


def test_no_import_cycle() -> None:
    g = graph()

    def reaches(start: str) -> set[str]:
        seen: set[str] = set()
        todo = list(g[start])
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo.extend(g.get(m, ()))
        return seen

    assert sorted(m for m in g if m in reaches(m)) == []


def test_the_run_mode_is_read_in_one_place() -> None:
    """Settings.quadlet (THEIAOS_PODMAN_QUADLET) is read by runtime.py alone; everyone
    else asks runtime.of / runtime.service_mode."""
    readers = []
    for path in sorted(PKG.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "quadlet" and \
                    isinstance(node.value, ast.Name) and node.value.id in ("s", "new", "settings"):
                readers.append(f"{path.stem}:{node.lineno}")
    assert {r.split(":")[0] for r in readers} <= {"runtime"}, readers


def test_the_runtime_follows_the_setting() -> None:
    import os

    from theiaos_pkg import runtime, settings
    from theiaos_pkg.account import Account

    acct = Account("theiaos", os.getuid(), os.getgid(), "/nonexistent", "/usr/sbin/nologin")
    for value, mode in (("1", "service"), ("0", "manual")):
        s = settings.load(environ={"THEIAOS_PODMAN_QUADLET": value}, admin={}, chosen={})
        assert runtime.of(s, acct).mode == mode
        assert runtime.service_mode(s) is (mode == "service")
