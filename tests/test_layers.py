"""Import rules between the package's layers, read from the source with ``ast``.

- capture (the sources and the store below every front end) imports nothing from the CLI,
  the dashboard, the integrations or the tracking API;
- nothing below the CLI imports click;
- the dashboard server, its write routes and the CLI hold no SQL (their queries live in
  the library and dashboard/data.py);
- migrations never imports db, and db reaches migrations only lazily (no import cycle);
- the spool has one door, ``capture/delivery.py``: no other module opens it or reaches
  into a delivery's spool (``db status`` only counts its lines).
- capture and `run_fields.py` import pydantic (and the models) only inside the functions
  that need it (issue 14).
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


def _module_level_imports(path: Path) -> list[str]:
    """The modules ``path`` imports when it is imported (not those a function imports)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {node.lineno for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))}
    return [module for line, module in _imports(path) if line in top]


def test_capture_loads_pydantic_only_when_a_value_needs_it() -> None:
    # issue 14: pydantic is a sixth of a backfill's time (tests/test_startup_work.py runs one)
    heavy = ("pydantic", "lora_tracker.models", "lora_tracker.run_model")
    on_the_way = [*_sources(PACKAGE / "capture"), PACKAGE / "run_fields.py"]
    bad = [
        f"{path.relative_to(PACKAGE.parent)} imports {module}"
        for path in on_the_way
        for module in _module_level_imports(path)
        if any(module == h or module.startswith(h + ".") for h in heavy)
    ]
    assert bad == []


def test_nothing_below_the_cli_imports_click() -> None:
    below = [p for p in _sources(PACKAGE) if (PACKAGE / "cli") not in p.parents]
    assert len(below) > 20
    assert _violations(below, ("click",)) == []


def _sql_in(path: Path) -> list[str]:
    """SQL statements written in a file (string constants other than docstrings, which may
    show SQL as an example) and calls of ``.execute``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    statement = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE)\b.*\b(FROM|INTO|SET|WHERE)\b", re.S)
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
            and statement.search(node.value)
        ):
            found.append(f"{path.name}:{node.lineno}: {node.value[:60]!r}")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("execute", "executemany")
        ):
            found.append(f"{path.name}:{node.lineno}: .{node.func.attr}(...)")
    return found


def test_sql_reader_sees_sql() -> None:
    # the rule below is only as good as this reader: it must find the library's SQL
    assert any("SELECT" in found for found in _sql_in(PACKAGE / "runs.py"))
    assert any(".execute(" in found for found in _sql_in(PACKAGE / "judging.py"))


def test_dashboard_server_holds_no_sql() -> None:
    """Neither the server nor its write routes hold SQL: reads live in dashboard/data.py and
    the library, writes go through the library (judging), as the CLI's do."""
    names = ("server.py", "writes.py", "judge.py", "gate.py")
    assert [line for name in names for line in _sql_in(PACKAGE / "dashboard" / name)] == []


def test_cli_holds_no_sql() -> None:
    """The commands parse, call the library and print: no query of their own (`lora-tracker
    sql` hands the user's text to the library's rawsql)."""
    found = [line for path in _sources(PACKAGE / "cli") for line in _sql_in(path)]
    assert found == []


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


# The spool's one door, and the one module that only counts its lines for `db status`.
SPOOL_DOOR = PACKAGE / "capture" / "delivery.py"
SPOOL_COUNTERS = (PACKAGE / "status.py",)


def _spool_attributes(path: Path) -> list[str]:
    """Where a file reaches for an object's ``spool`` attribute (``delivery.spool...``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [
        f"{path.relative_to(PACKAGE.parent)}:{node.lineno} uses .spool"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr == "spool"
    ]


def test_only_the_delivery_opens_the_spool() -> None:
    # the reader sees what it looks for, in the one file allowed to do it
    assert _spool_attributes(SPOOL_DOOR)
    assert _violations([SPOOL_DOOR], ("lora_tracker.spool",))
    others = [p for p in _sources(PACKAGE) if p != SPOOL_DOOR and p not in SPOOL_COUNTERS]
    assert len(others) > 20
    assert _violations(others, ("lora_tracker.spool",)) == []
    # the watcher, the API thread, the hooks and the CLI ask the delivery (replay, keep,
    # pending) instead of reading its spool
    assert [hit for path in others for hit in _spool_attributes(path)] == []


def _layout_table() -> str:
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    return "\n".join(line for line in section.splitlines() if line.startswith("| `"))


def test_the_readme_layout_lists_every_module() -> None:
    table = _layout_table()
    missing = []
    for path in sorted(PACKAGE.iterdir()):
        if path.suffix == ".py" and path.stem not in ("__init__", "__main__"):
            names = (f"`lora_tracker/{path.name}`", f"`{path.name}`")
        elif path.is_dir() and (path / "__init__.py").exists():
            names = (f"`lora_tracker/{path.name}/`", f"`{path.name}/`")
        else:
            continue
        if not any(name in table for name in names):
            missing.append(path.name)
    assert missing == [], f"add to the README's layout table: {missing}"
    # capture's own table, in its package docstring, names each of its modules
    docstring = ast.get_docstring(ast.parse((PACKAGE / "capture" / "__init__.py").read_text()))
    assert docstring is not None
    listed = {line.split()[0] for line in docstring.splitlines() if line.strip()}  # first words
    unlisted = [
        p.name
        for p in _sources(PACKAGE / "capture")
        if p.name != "__init__.py" and p.name not in listed
    ]
    assert unlisted == [], f"add to capture/__init__.py's table: {unlisted}"
