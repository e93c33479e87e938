"""The map in README's "For contributors" is the code's: imports run down it, never up,
with no circle (imports under TYPE_CHECKING included), and every module is on it.

The order is read from the README's table (and, inside session/, from the package's
docstring), so a new module or a new import that climbs fails here until the map says
where it belongs."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import mysqlgate

PACKAGE = Path(mysqlgate.__file__).parent
README = PACKAGE.parent / "README.md"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that `name` imports (relative imports; `from . import x`
    counts as importing x)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)]
            target = ".".join([*base, *([node.module] if node.module else [])])
            for alias in node.names:
                submodule = f"{target}.{alias.name}".lstrip(".")
                found.add(submodule if submodule in modules else target)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [node.module] if isinstance(node, ast.ImportFrom) else \
                [alias.name for alias in node.names]
            for full in names:
                if full and (full == "mysqlgate" or full.startswith("mysqlgate.")):
                    found.add(full.removeprefix("mysqlgate").lstrip("."))
    found.discard(name)
    return {module for module in found if module in modules}


def _readme_layers() -> list[list[str]]:
    """The table's rows, top to bottom: the module patterns of each ("admin/" -> "admin*")."""
    text = README.read_text()
    table = text[text.index("| module | what it holds |"):]
    layers = []
    for line in table.splitlines()[2:]:
        if not line.startswith("| `"):
            break
        first_cell = line.split("|")[1]
        layers.append([
            name[:-1] + "*" if name.endswith("/") else name.removesuffix(".py")
            for name in re.findall(r"`([^`]+)`", first_cell)
        ])
    return layers


def _session_rooms() -> list[str]:
    """session/'s rooms, top to bottom, from the package's docstring."""
    doc = (PACKAGE / "session" / "__init__.py").read_text()
    return ["session." + room for room in re.findall(r"^ {4}(\w+)\.py\s", doc, re.MULTILINE)]


def _rank(module: str, layers: list[list[str]]) -> int | None:
    for index, patterns in enumerate(layers):
        for pattern in patterns:
            if module == pattern or pattern.endswith("*") and (
                    module == pattern[:-1] or module.startswith(pattern[:-1] + ".")):
                return index
    return None


def test_every_module_is_on_the_map() -> None:
    layers = _readme_layers()
    assert len(layers) >= 10, layers  # the table was found
    missing = sorted(m for m in _modules() if m and _rank(m, layers) is None)
    assert missing == [], f"add these to README's map: {missing}"
    rooms = _session_rooms()
    session_modules = sorted(m for m in _modules() if m.startswith("session."))
    assert sorted(rooms) == session_modules, "session/__init__.py's list of rooms"


def test_imports_run_down_the_map() -> None:
    modules = _modules()
    layers = _readme_layers()
    climbing = []
    for name, path in modules.items():
        if not name:
            continue
        for target in _imports(name, path, modules):
            if not target:
                continue  # mysqlgate's __init__: the version
            rank, target_rank = _rank(name, layers), _rank(target, layers)
            assert rank is not None and target_rank is not None
            if target_rank < rank:
                climbing.append(f"{name} -> {target}")
    assert climbing == [], climbing


def test_session_rooms_import_only_rooms_below() -> None:
    modules = _modules()
    rooms = _session_rooms()
    climbing = [
        f"{room} -> {target}"
        for room in rooms
        for target in _imports(room, modules[room], modules)
        if target in rooms and rooms.index(target) <= rooms.index(room)
    ]
    assert climbing == [], climbing


def test_no_import_circle() -> None:
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    # A circle exists when some module reaches itself.
    circles = []
    for start in graph:
        seen: set[str] = set()
        stack = list(graph[start])
        while stack:
            module = stack.pop()
            if module == start:
                circles.append(start)
                break
            if module not in seen:
                seen.add(module)
                stack.extend(graph[module])
    assert circles == [], f"modules on an import circle: {sorted(circles)}"


def test_the_checks_see_a_climbing_import() -> None:
    # The graph reader must see the imports these tests forbid, or they pass vacuously.
    modules = _modules()
    assert "backend" in _imports("session.commands", modules["session.commands"], modules)
    assert "session.client_state" in _imports("admin.views", modules["admin.views"], modules)
    layers = _readme_layers()
    rank = _rank("backend", layers)
    assert rank is not None and rank > (_rank("pool", layers) or 0)
    assert _rank("admin.views", layers) == _rank("metrics", layers)


# A module longer than this holds more than one job, or says one at too great a length.
MAX_LINES = 520


def test_modules_stay_small() -> None:
    sizes = {name or "mysqlgate": len(path.read_text().splitlines())
             for name, path in _modules().items()}
    big = {name: lines for name, lines in sizes.items() if lines > MAX_LINES}
    assert big == {}, f"over {MAX_LINES} lines: {big}"
