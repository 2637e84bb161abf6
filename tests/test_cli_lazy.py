"""The root command loads its commands lazily (`lora_tracker.cli.COMMANDS`): its table of
names, modules and one-line helps must say what the command modules really define."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import click
from click.testing import CliRunner

import lora_tracker.cli as cli_package
from lora_tracker.cli import COMMANDS, cli

CLI_FOLDER = Path(cli_package.__file__).parent


def _registered() -> dict[str, tuple[str, click.Command]]:
    """Every command each ``*_commands`` module registers: name -> (module, command)."""
    found: dict[str, tuple[str, click.Command]] = {}
    modules = sorted(path.stem for path in CLI_FOLDER.glob("*_commands.py"))
    assert len(modules) >= 7
    for module_name in modules:
        module = importlib.import_module(f"lora_tracker.cli.{module_name}")
        group = click.Group()
        module.register(group)
        assert group.commands, f"{module_name} registers nothing"
        for name, command in group.commands.items():
            assert name not in found, f"{name} is registered twice"
            found[name] = (module_name, command)
    return found


def test_the_table_names_every_registered_command_where_it_lives() -> None:
    registered = _registered()
    assert sorted(COMMANDS) == sorted(registered)
    for name, (where, _) in COMMANDS.items():
        module_name, attribute = where.split(":")
        module, command = registered[name]
        assert module_name == module, name
        assert getattr(importlib.import_module(f"lora_tracker.cli.{module}"), attribute) is command


def test_the_table_gives_the_help_click_would_show() -> None:
    """At any width, the one-line help listed from the table is the command's own."""
    for name, (_module, command) in _registered().items():
        listed = click.Command(name, help=COMMANDS[name][1])
        assert not command.hidden and not command.deprecated, name
        for limit in range(5, 300):
            assert listed.get_short_help_str(limit) == command.get_short_help_str(limit), (
                name,
                limit,
            )


_HELP_SCRIPT = """
import sys
from lora_tracker.cli import cli
if sys.argv[1] == "loaded":
    for name in cli.list_commands(None):
        cli.get_command(None, name)
try:
    cli.main(["--help"], prog_name="lora-tracker")
except SystemExit:
    pass
print("MODULES", *sorted(m for m in sys.modules if m.endswith("_commands")))
"""


def _help_in_a_process(mode: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", _HELP_SCRIPT, mode],
        capture_output=True,
        text=True,
        check=True,
        env={"COLUMNS": "100", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(CLI_FOLDER.parents[1])},
    )
    return done.stdout


def test_root_help_lists_every_command_without_importing_them() -> None:
    lazy = _help_in_a_process("lazy")
    loaded = _help_in_a_process("loaded")
    help_text, modules = lazy.split("MODULES")
    assert modules.split() == []  # no command module imported for the root's --help
    assert len(loaded.split("MODULES")[1].split()) >= 7
    # the same page as when every command is loaded (click cutting their docstrings)
    assert help_text == loaded.split("MODULES")[0]
    listed = help_text.split("Commands:\n")[1].splitlines()
    assert [line.split()[0] for line in listed] == sorted(COMMANDS)


def test_each_command_help_and_unknown_commands() -> None:
    runner = CliRunner()
    for name in COMMANDS:
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert f"Usage: cli {name}" in result.output
    result = runner.invoke(cli, ["wach", "/tmp"])
    assert result.exit_code == 2
    assert "No such command 'wach'." in result.output
    if hasattr(click.exceptions, "NoSuchCommand"):  # click 8.4+ suggests a close name
        assert "Did you mean 'watch'?" in result.output


def test_the_collector_is_paused_while_a_command_imports(tmp_path: Path) -> None:
    """`lora-tracker` pauses the garbage collector while a command imports its modules, and
    a command that opens its database has it running again (what was imported frozen out
    of its full passes); `cli` run in a test process never touches the collector."""
    import gc

    probe = (
        "import gc, sys; import lora_tracker.cli as c; sys.argv = ['lora-tracker'] + sys.argv[1:]\n"
        "seen = []\n"
        "real = c.AppContext.open_db\n"
        "def open_db(self, **kw):\n"
        "    seen.append(gc.isenabled()); db = real(self, **kw)\n"
        "    seen.append((gc.isenabled(), gc.get_freeze_count() > 0)); return db\n"
        "c.AppContext.open_db = open_db\n"
        "import atexit; atexit.register(lambda: print(seen))\n"
        "c.main()\n"
    )  # fmt: skip
    home = tmp_path / "home"
    done = subprocess.run(
        [sys.executable, "-c", probe, "--database-url", "postgresql://u@127.0.0.1:9/x", "runs"],
        capture_output=True, text=True, env={**os.environ, "LORA_TRACKER_HOME": str(home)},
    )  # fmt: skip
    assert done.stdout.strip() == "[False, (True, True)]", done.stdout + done.stderr
    frozen = gc.get_freeze_count()
    assert gc.isenabled()
    CliRunner().invoke(cli, ["--database-url", "postgresql://u@127.0.0.1:9/x", "runs"])
    assert gc.isenabled() and gc.get_freeze_count() == frozen
