"""`core` is the only way into the stores: no module above it imports `metadata`,
`storage` or `drivers` (at its top, inside a function, or for type checking only), but
`backends.py`, the one module that builds them. Read from the source with `ast`, so a
new module is checked the day it is written."""

from __future__ import annotations

import ast
from pathlib import Path

import dockyard

ROOT = Path(dockyard.__file__).parent
STORES = ("dockyard.metadata", "dockyard.storage", "dockyard.drivers")
#: the layers at or below `core`, which may reach the stores, and the one builder
BELOW = {"core", "metadata", "storage", "drivers", "oci", "config", "auth"}
BUILDER = ROOT / "backends.py"


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module `path` imports, absolute, with its line."""
    package = ".".join(("dockyard", *path.relative_to(ROOT).parent.parts))
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[:len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def test_no_module_above_core_reaches_the_stores() -> None:
    above = [p for p in sorted(ROOT.rglob("*.py"))
             if p != BUILDER and p.relative_to(ROOT).parts[0] not in BELOW]
    assert len(above) > 50  # the walk found the api, cli, web... modules
    reaching = [f"{p.relative_to(ROOT)}:{line}: {name}" for p in above
                for line, name in _imports(p)
                if any(name == s or name.startswith(s + ".") for s in STORES)]
    assert reaching == []


def test_the_check_sees_an_import_inside_a_function() -> None:
    module = ROOT / "cli" / "importer.py"
    names = [name for _, name in _imports(module)]
    assert "dockyard.core.importer" in names
    assert "dockyard.backends.distribution_tree" in names  # imported inside functions
