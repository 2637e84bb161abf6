"""Import rules between the package's layers, read from the source with ``ast``.

- capture (the sources and the store below every front end) imports nothing from the CLI,
  the dashboard, the integrations or the tracking API;
- nothing below the CLI imports click;
- the dashboard server and its write routes hold no SQL (queries live in data.py and the
  library);
- migrations never imports db, and db reaches migrations only lazily (no import cycle).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "lora_tracker"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, lazy ones included."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = _module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            # "from . import tracking" names the module in the alias
            found.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names)
    return found


def _sources(under: Path) -> list[Path]:
    return sorted(under.rglob("*.py"))


def _violations(files: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for path in files:
        for line, module in _imports(path):
            if any(module == f or module.startswith(f + ".") for f in forbidden):
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}")
    return bad


def test_import_parser_sees_relative_and_lazy_imports() -> None:
    # The rules below are only as good as this reader: check it on the real tree.
    watcher = _imports(PACKAGE / "capture" / "watcher.py")
    assert any(m.startswith("lora_tracker.capture.") for _, m in watcher)
    cli = _imports(PACKAGE / "cli" / "__init__.py")
    assert any(m == "click" for _, m in cli)
    assert any(m == "lora_tracker.db" for _, m in cli)  # a lazy one inside a function


def test_capture_imports_no_front_end() -> None:
    forbidden = tuple(
        f"lora_tracker.{name}" for name in ("cli", "dashboard", "integrations", "tracking")
    )
    assert _violations(_sources(PACKAGE / "capture"), forbidden) == []


def test_nothing_below_the_cli_imports_click() -> None:
    below = [p for p in _sources(PACKAGE) if (PACKAGE / "cli") not in p.parents]
    assert len(below) > 20
    assert _violations(below, ("click",)) == []


def test_dashboard_server_holds_no_sql() -> None:
    """Neither the server nor its write routes hold SQL: reads live in dashboard/data.py and
    the library, writes go through the library (judging), as the CLI's do."""
    statement = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE)\b")
    sql = []
    for name in ("server.py", "writes.py", "judge.py", "gate.py"):
        tree = ast.parse((PACKAGE / "dashboard" / name).read_text(encoding="utf-8"))
        sql += [
            f"{name} line {node.lineno}: {node.value[:60]!r}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and statement.search(node.value)
        ]
    assert sql == []


def test_db_and_migrations_do_not_import_each_other() -> None:
    assert _violations([PACKAGE / "migrations.py"], ("lora_tracker.db",)) == []
    assert _violations([PACKAGE / "pg.py"], ("lora_tracker.db", "lora_tracker.migrations")) == []
    # db may reach migrations (it migrates on connect), but only lazily, inside a function
    top_level = ast.parse((PACKAGE / "db.py").read_text(encoding="utf-8")).body
    eager = [
        node
        for node in top_level
        if isinstance(node, ast.ImportFrom)
        and (
            (node.module or "").endswith("migrations")
            or any(alias.name == "migrations" for alias in node.names)
        )
    ]
    assert eager == []
