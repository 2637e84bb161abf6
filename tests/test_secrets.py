"""No password is ever printed, nor visible to other users in a process's arguments."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from lora_tracker.cli import cli
from lora_tracker.db import Database, parse_conninfo
from lora_tracker.errors import DatabaseUnavailable
from lora_tracker.settings import Target, mask_password, redact

from .conftest import run_cli

SECRET = "s3cretPW"

MALFORMED = [
    f"postgresql//user:{SECRET}@db.example.com/db",  # the ":" after the scheme forgotten
    f"postgresql://user:{SECRET}@db.example.com/db%zz",  # a bad escape after the password
    f"postgresql://user:{SECRET}%zz@db.example.com/db",  # a bad escape in the password
    f"postgresql://user:{SECRET}@[::1:5432/db",  # an unclosed IPv6 bracket
    f"postgresql://user:{SECRET}@db.example.com:99999/db",  # a port out of range
    f"postgresql://user:{SECRET}@db.example.com:port/db",
    f"host=db.example.com password='{SECRET}",  # an unterminated quote
    f"host=db.example.com password={SECRET} port",
    f"postgresql://db.example.com/db?password={SECRET}&sslmode=bogus",
]


@pytest.mark.parametrize("url", MALFORMED)
@pytest.mark.parametrize(
    "command", [["runs"], ["init"], ["db", "status"], ["sql", "SELECT 1"], ["show", "x"]]
)
def test_malformed_url_is_one_line_without_password(url: str, command: list[str]) -> None:
    """A malformed URL, whatever its shape, is a one-line error (exit 1), password masked."""
    result = CliRunner().invoke(cli, ["--database-url", url, *command])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert SECRET not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "***" in errors[0], result.output


@pytest.mark.parametrize("url", MALFORMED[:4])
def test_malformed_url_in_environment_real_process(url: str) -> None:
    """The same from the environment, in a real process with logging on: no traceback."""
    result = run_cli("-v", "runs", env={"LORA_TRACKER_DATABASE_URL": url})
    assert result.returncode == 1
    assert SECRET not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("Error: cannot connect to ")


@pytest.mark.parametrize("url", MALFORMED)
def test_library_raises_one_domain_error(url: str) -> None:
    """The library raises DatabaseUnavailable (so capture spools), never a psycopg error."""
    with pytest.raises(DatabaseUnavailable) as caught, Database(url) as db:
        db.connect()
    assert SECRET not in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("url", MALFORMED)
def test_db_url_masks_password(url: str) -> None:
    """`db url` prints the URL masked; --show-password prints it as given."""
    masked = CliRunner().invoke(cli, ["--database-url", url, "db", "url"])
    assert masked.exit_code == 0 and SECRET not in masked.output and "***" in masked.output
    shown = CliRunner().invoke(cli, ["--database-url", url, "db", "url", "--show-password"])
    assert shown.exit_code == 0 and shown.output == url + "\n"


def test_mask_password_keeps_the_rest() -> None:
    """Masking changes the password only."""
    assert (
        mask_password("postgresql://u:p%40ss@db.example.com:6543/postgres?sslmode=require")
        == "postgresql://u:***@db.example.com:6543/postgres?sslmode=require"
    )
    assert mask_password("postgresql://u@h/d") == "postgresql://u@h/d"
    assert mask_password("postgresql://[::1]:5432/d") == "postgresql://[::1]:5432/d"
    assert mask_password("host=h password='a b' user=u") == "host=h password=*** user=u"
    assert (
        mask_password("postgresql://h/d?user=u&password=x&sslmode=disable")
        == "postgresql://h/d?user=u&password=***&sslmode=disable"
    )


# Passwords hold capital letters that occur in no template and in no message of libpq's
# (which use "I", "P", "U", "R", "V", "L", "O", "T" and "F": none here), among the characters that
# matter to a URL; a capital letter in the output can only be a leak.
LETTERS = "ABCDEGHJKMNQSWXYZ"
PASSWORDS = st.text(alphabet=LETTERS + "!$&'\"()*+,;=:@/?#%[]\\ ", min_size=1).filter(
    lambda p: any(c in LETTERS for c in p)
)
TEMPLATES = [
    "postgresql://user:{}@db.example.com/db",
    "postgresql//user:{}@db.example.com/db",
    "postgres://user:{}@[db.example.com/db",
    "postgresql://user:{}@db.example.com:port/db%zz",
    "postgresql://db.example.com/db?password={}&sslmode=require",
    "host=db.example.com password={} user=me",
    "host=db.example.com password='{}",
    "user:{}@db.example.com/db",
]


@settings(max_examples=400, deadline=None)
@given(password=PASSWORDS, template=st.sampled_from(TEMPLATES))
def test_no_password_survives_masking_or_parsing(password: str, template: str) -> None:
    """Whatever the password and the shape of the string, masking hides all of it, and
    an error about the string says nothing of it."""
    url = template.format(password)
    leaked = [c for c in mask_password(url) if c in LETTERS]
    assert not leaked, mask_password(url)
    try:
        parse_conninfo(url)
    except DatabaseUnavailable as exc:
        message = str(exc)
        assert "\n" not in message
        assert not [c for c in message if c in LETTERS], message


FAKE_PSQL = """#!{python}
import json, os, stat, sys
record = {{"argv": sys.argv, "PGPASSWORD": os.environ.get("PGPASSWORD")}}
params = {{}}
for piece in sys.argv[1].split():
    key, _, value = piece.partition("=")
    params[key] = value.strip("'")
passfile = params.get("passfile")
if passfile:
    record["passfile_mode"] = stat.S_IMODE(os.stat(passfile).st_mode)
    record["folder_mode"] = stat.S_IMODE(os.stat(os.path.dirname(passfile)).st_mode)
    record["passfile"] = open(passfile).read()
    record["passfile_path"] = passfile
with open({out!r}, "w") as handle:
    json.dump(record, handle)
"""


def run_in_terminal(args: list[str], env: dict[str, str], send: bytes = b"") -> str:
    """Run the CLI with a pseudo-terminal as its standard input and output."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lora_tracker", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        close_fds=True,
    )
    os.close(slave)
    if send:
        time.sleep(1.0)
        os.write(master, send)
    output = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the terminal closed: the process is gone
                break
            if not chunk:
                break
            output += chunk
        elif proc.poll() is not None:
            break
    proc.wait(30)
    os.close(master)
    return output.decode(errors="replace")


def test_interactive_sql_keeps_password_off_psql_command_line(tmp_path: Path) -> None:
    """`lora-tracker sql` starts psql with no password in its arguments or environment:
    it is in a pass file only the user can read, removed when psql exits."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "psql-call.json"
    fake = bin_dir / "psql"
    fake.write_text(FAKE_PSQL.format(python=sys.executable, out=str(record)))
    fake.chmod(0o755)
    url = f"postgresql://me:{SECRET}%3Ax@db.example.com:6543/postgres?sslmode=disable"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PGPASSWORD": "stale-from-elsewhere",
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    }
    output = run_in_terminal(["--database-url", url, "sql"], env)
    call = json.loads(record.read_text())
    assert SECRET not in " ".join(call["argv"]), call["argv"]
    assert SECRET not in output
    assert call["PGPASSWORD"] is None
    assert call["passfile_mode"] == 0o600 and call["folder_mode"] == 0o700
    assert call["passfile"] == f"*:*:*:*:{SECRET}\\:x\n"  # decoded, ":" escaped
    params = conninfo_to_dict(call["argv"][1])
    assert (params["host"], params["port"], params["user"], params["sslmode"]) == (
        "db.example.com",
        "6543",
        "me",
        "disable",
    )
    assert not Path(call["passfile_path"]).exists()
    assert not Path(call["passfile_path"]).parent.exists()


def test_interactive_sql_logs_in_with_password(tmp_path: Path) -> None:
    """With the real psql, through PgBouncer (which checks the password), the pass file
    logs in: a wrong password would not."""
    pooler = os.environ.get("LORA_TRACKER_TEST_PGBOUNCER_URL")
    if not pooler:
        pytest.skip("LORA_TRACKER_TEST_PGBOUNCER_URL not set (run .ci/start-pgbouncer)")
    if not any(
        os.access(os.path.join(d, "psql"), os.X_OK) for d in os.environ["PATH"].split(os.pathsep)
    ):
        pytest.skip("no psql on PATH")
    env = {
        **os.environ,
        "PSQLRC": os.devnull,
        "PAGER": "cat",
        "PSQL_PAGER": "cat",
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    }
    env.pop("PGPASSWORD", None)
    good = run_in_terminal(
        ["--database-url", pooler, "sql"], env, b"SELECT 'logged-' || 'in' AS x;\n\\q\n"
    )
    assert "logged-in" in good, good
    params = conninfo_to_dict(pooler)
    params["password"] = "wrong-password"
    wrong = make_conninfo(**params)  # type: ignore[arg-type]
    bad = run_in_terminal(["--database-url", wrong, "sql"], env, b"\\q\n")
    assert "logged-in" not in bad and "authentication failed" in bad, bad
    assert "wrong-password" not in bad


def test_a_password_libpq_cuts_at_an_at_sign_or_slash_stays_hidden() -> None:
    """libpq ends a URL's password at its first "@" or "/" and takes the rest for the host
    or the database, which its errors name (`failed to resolve host 'SECRET@127.0.0.1'`):
    those pieces are masked too, and the spool's tag for the database holds none of them."""
    cases = {
        "postgresql://bob:xx@S3cretPW.example.invalid@127.0.0.1:1/db":
            ("failed to resolve host 'S3cretPW.example.invalid@127.0.0.1'", "S3cretPW"),
        "postgresql://u:abc@defg/TOPSECRET@127.0.0.1:1/x":
            ("failed to resolve host 'defg'; database 'TOPSECRET@127.0.0.1:1/x'", "TOPSECRET"),
    }  # fmt: skip
    for url, (message, secret) in cases.items():
        shown = redact(f"connection failed: {message}", url)
        assert secret not in shown and "defg" not in shown, shown
        tag = Target(url, "--database-url", Path("/tmp")).spool_tag
        assert secret not in tag and "defg" not in tag, tag
