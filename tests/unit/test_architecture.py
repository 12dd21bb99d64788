"""The layering of DESIGN.md §1, checked on the source: who may import whom, and sorted ``__all__``s."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "udpkit"
STDLIB = set(sys.stdlib_module_names)

# package -> the udpkit packages it may import (besides itself)
ALLOWED = {
    "errors": set(),
    "addr": {"errors"},
    "files": {"errors"},
    "services": {"errors", "addr", "files"},
    "net": {"errors", "addr"},
    "inventory": {"errors", "addr"},
    "listen": {"services", "net", "errors", "addr", "files"},
    "probe": {"services", "net", "errors", "addr"},
    "compat": {"listen", "probe", "net", "errors", "addr", "files"},
    "exporter": {"probe", "inventory", "services", "net", "errors", "addr", "files"},
}


def modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py"))


def part(path: Path) -> str:
    rel = path.relative_to(SRC).parts
    return rel[0].removesuffix(".py") if rel else ""


def imported(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_layers_import_only_what_design_md_allows(path: Path) -> None:
    mine = part(path)
    for name in imported(path):
        top = name.split(".")[0]
        if top == "udpkit":
            target = name.split(".")[1] if "." in name else ""
            if mine == "cli" or mine in ("__init__", "__main__"):
                continue
            assert target != "cli", f"{path.name} imports the CLI"
            if target == "_typing":  # typing's run-time stand-ins, below every layer
                continue
            assert target == mine or target in ALLOWED.get(mine, set()), f"{mine} may not import udpkit.{target}"
        elif mine in ("errors", "addr", "files", "inventory", "net"):
            assert top in STDLIB, f"{path.name} imports the third-party {top}: the core stays dependency-free"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_public_names_are_sorted(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            names = ast.literal_eval(node.value)
            assert names == sorted(names), f"__all__ of {path.name} is not sorted"


def test_the_library_never_prints_or_exits() -> None:
    for path in modules():
        if part(path) in ("cli", "__main__"):
            continue
        text = path.read_text()
        assert "print(" not in text and "sys.exit" not in text, path.name


def _calls(tree: ast.AST) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)]


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_only_net_makes_sockets(path: Path) -> None:
    """Every socket goes through ``net/`` (and the inventory's netlink backend, which is its own I/O)."""
    if part(path) in ("net", "inventory"):
        return
    for call in _calls(ast.parse(path.read_text())):
        func = call.func
        made = isinstance(func, ast.Attribute) and func.attr == "socket" and getattr(func.value, "id", None) == "socket"
        assert not made, f"{path.relative_to(SRC)}:{call.lineno} makes a socket outside net/"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_no_package_reaches_into_another_packages_private_modules(path: Path) -> None:
    mine = part(path)
    for name in imported(path):
        parts = name.split(".")
        if parts[0] != "udpkit" or len(parts) < 3:
            continue
        private = any(piece.startswith("_") for piece in parts[2:])
        assert not (private and parts[1] != mine), f"{path.relative_to(SRC)} imports the private {name}"


def test_udpkit_ss_runs_without_importing_typing() -> None:
    """``typing`` (and the ``re`` and ``contextlib`` it pulls in) costs ~4 ms of every listing: the
    modules on ``udpkit ss``'s path take their run-time needs from ``udpkit._typing``."""
    import subprocess

    code = ("import io, sys; from udpkit.cli import main; main(['ss', '-uln'], stdout=io.StringIO()); "
            "main(['ss', '-tuln'], stdout=io.StringIO()); print(sorted({'typing', 're'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
