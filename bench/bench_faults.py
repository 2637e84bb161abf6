"""The fault matrix: what capture does with poison, torn, full and deleted inputs.

    python bench/bench_faults.py

Each scenario writes real files (or real API calls) into a fresh database on the embedded
server, goes through the fault, and then counts from the database: events written, events
landed (rows that should exist and do), duplicates (rows beyond one per file / epoch) and
events rejected to spool/rejected.jsonl, with the reason. The full-disk scenario needs root
(a 4 MiB tmpfs). Prints a markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from click.testing import CliRunner
from common import machine, start_embedded
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row

from lora_tracker import embedded
from lora_tracker.capture.delivery import EventDelivery
from lora_tracker.capture.watcher import Watcher
from lora_tracker.cli import cli
from lora_tracker.migrations import migrate
from tests.kohya_sim import KohyaRun, checkpoint_bytes, sd15_metadata, write_in_place
from tests.netproxy import Proxy

Result = dict[str, Any]


def poison(path: Path, **overrides: str) -> None:
    meta = sd15_metadata("poison", 777, 1731146400.0)
    meta.update(ss_epoch="1", ss_num_epochs="2", **overrides)
    write_in_place(path, checkpoint_bytes(meta, 8, seed=7))


class Bench:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.admin = start_embedded(root / "server")
        self.count = 0

    def fresh(self) -> tuple[str, Path]:
        """A new migrated database and a new data folder (spool) for one scenario."""
        self.count += 1
        name = f"faults_{self.count}"
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        params = conninfo_to_dict(self.admin)
        params["dbname"] = name
        url = make_conninfo(**params)  # type: ignore[arg-type]
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
            migrate(conn)
        home = self.root / f"home{self.count}"
        home.mkdir()
        os.environ["LORA_TRACKER_HOME"] = str(home)
        return url, home

    def stop(self) -> None:
        embedded.stop(self.root / "server")


def count(url: str, query: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(query).fetchone()
        return int(row[0]) if row else 0


def files_landed(url: str) -> tuple[int, int]:
    """(checkpoint files recorded, duplicates: files in more than one row or epoch)."""
    files = count(url, "SELECT count(DISTINCT path) FROM checkpoints")
    epochs = count(url, "SELECT count(*) FROM epoch_results WHERE checkpoint_path IS NOT NULL")
    distinct = count(
        url,
        "SELECT count(DISTINCT checkpoint_path) FROM epoch_results "
        "WHERE checkpoint_path IS NOT NULL",
    )
    return files, epochs - distinct


def rejected(home: Path) -> list[str]:
    path = home / "spool" / "rejected.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["reason"] for line in path.read_text().splitlines()]


def outcome(
    scenario: str, written: int, url: str, home: Path, *, landed: int | None = None, extra: int = 0
) -> Result:
    files, duplicates = files_landed(url)
    return {
        "scenario": scenario,
        "written": written,
        "landed": (files if landed is None else landed) + extra,
        "duplicates": duplicates,
        "rejected": rejected(home),
    }


def cli_run(*args: str) -> str:
    return CliRunner().invoke(cli, list(args)).output


def down_url(url: str) -> tuple[str, Proxy]:
    params = conninfo_to_dict(url)
    host, port = str(params.get("host", "")), int(params.get("port") or 5432)
    proxy = Proxy(f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port))
    params.update(host="127.0.0.1", port=str(proxy.port))
    return make_conninfo(**params), proxy  # type: ignore[arg-type]


# -- scenarios ---------------------------------------------------------------------------------


def nul_metadata(bench: Bench) -> Result:
    url, home = bench.fresh()
    out = bench.root / "nul"
    KohyaRun(out, epochs=3, save_last_n=None, samples_per_epoch=0).run()
    poison(out / "nul-000001.safetensors", ss_output_name="n\x00ul", ss_optimizer="Ada\x00mW")
    cli_run("--database-url", url, "watch", "--once", str(out))
    return outcome(
        "checkpoint metadata holding NUL, beside 3 good files (watch --once)", 4, url, home
    )


def refused_file(bench: Bench) -> Result:
    url, home = bench.fresh()
    out = bench.root / "refused"
    KohyaRun(out, epochs=10, save_last_n=None, samples_per_epoch=0).run()
    poison(out / "big-000001.safetensors", ss_output_name=os.urandom(6000).hex(), ss_session_id="6")
    cli_run("--database-url", url, "watch", "--once", str(out))
    return outcome(
        "a file the database refuses (name over the index limit) among 10", 11, url, home
    )


def api_poison(bench: Bench) -> Result:
    url, home = bench.fresh()
    import lora_tracker

    run = lora_tracker.start_run("a\x00b", config={"hub_note": "x\x00y"}, database_url=url)
    run.log_epoch(-1, loss=0.3)  # refused: epoch_number >= 0
    run.log_epoch(1, loss=0.2)
    run.log_epoch(2, loss=0.1)
    run.finish()
    run.flush(30)
    epochs = count(url, "SELECT count(*) FROM epoch_results")
    runs = count(url, "SELECT count(*) FROM training_runs WHERE status = 'completed'")
    scenario = "Python API: run name with NUL, one epoch the schema refuses"
    return outcome(scenario, 5, url, home, landed=epochs + runs * 2)


def torn_spool(bench: Bench) -> Result:
    url, home = bench.fresh()
    out = bench.root / "torn"
    KohyaRun(out, epochs=5, save_last_n=None, samples_per_epoch=0).run()
    down, _proxy = down_url(url)
    (home / "spool").mkdir()
    (home / "spool" / "events.jsonl").write_text('{"kind": "checkpoint", "path": "/cu')
    cli_run("--database-url", down, "record", str(out))
    for _ in range(3):
        cli_run("--database-url", down, "sync")  # database still down: nothing twice
    cli_run("--database-url", url, "sync")
    return outcome(
        "spool with a torn last line, 5 events appended, 3 syncs while down", 5, url, home
    )


def full_disk(bench: Bench) -> Result | None:
    if os.geteuid() != 0:
        return None
    url, _ = bench.fresh()
    disk = bench.root / "tiny"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)]).returncode:
        return None
    try:
        home = disk / "home"
        (home / "spool").mkdir(parents=True)
        os.environ["LORA_TRACKER_HOME"] = str(home)
        try:
            with open(disk / "filler", "ab") as handle:
                while True:
                    handle.write(b"\0" * 512)
                    handle.flush()
        except OSError:
            pass
        down, proxy = down_url(url)
        out = bench.root / "full"
        out.mkdir()
        delivery = EventDelivery(down)
        watcher = Watcher([out], delivery)
        watcher.start()
        watcher.wait_backfilled(30)
        KohyaRun(out, epochs=4, save_last_n=2, samples_per_epoch=0).run(pause=0.2)
        time.sleep(1)
        proxy.up()
        watcher._last_replay = 0.0
        watcher.schedule("/wake.safetensors")
        _wait(lambda: count(url, "SELECT count(*) FROM checkpoints WHERE NOT on_disk") == 1, 30)
        watcher.stop()
        delivery.close()
        proxy.down()
        removals = count(url, "SELECT count(*) FROM checkpoints WHERE NOT on_disk")
        scenario = "disk full and database down during a 4-epoch run, then back"
        return outcome(scenario, 5, url, home, extra=removals)
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def killed_watcher(bench: Bench) -> Result:
    url, home = bench.fresh()
    out = bench.root / "killed"
    for n in range(20):
        KohyaRun(out, output_name=f"r{n:02d}", epochs=5, save_last_n=None, samples_per_epoch=0,
                 chunks=1, session=1000 + n).run()  # fmt: skip
    command = [sys.executable, "-m", "lora_tracker", "--database-url", url, "watch", str(out)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait(lambda: count(url, "SELECT count(*) FROM checkpoints") > 0, 60)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    cli_run("--database-url", url, "watch", "--once", str(out))
    return outcome("watcher killed (-9) mid-backfill of 100 files, then run again", 100, url, home)


def deleted_run(bench: Bench) -> Result:
    url, home = bench.fresh()
    out = bench.root / "deleted"
    KohyaRun(out, epochs=3, save_last_n=None, samples_per_epoch=0).run()
    cli_run("--database-url", url, "watch", "--once", str(out))
    cli_run("--database-url", url, "cleanup", "--older-than", "0d", "--yes")
    cli_run("--database-url", url, "watch", "--once", str(out))
    resurrected = count(url, "SELECT count(*) FROM training_runs")
    cli_run("--database-url", url, "record", "--force", str(out))
    return outcome(
        f"run deleted, folder watched again ({resurrected} runs), then record --force", 3, url, home
    )


def _wait(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not condition():
        time.sleep(0.1)


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="lt-faults-"))
    bench = Bench(root)
    results: list[Result] = []
    try:
        for scenario in (nul_metadata, refused_file, api_poison, torn_spool, full_disk,
                         killed_watcher, deleted_run):  # fmt: skip
            found = scenario(bench)
            if found is not None:
                results.append(found)
                print(f"done: {found['scenario']}", file=sys.stderr)
    finally:
        bench.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(f"Machine: {machine()}\n")
    print("| scenario | events written | landed | duplicates | rejected (reason) |")
    print("| --- | --- | --- | --- | --- |")
    for r in results:
        reasons = "; ".join(sorted(set(r["rejected"]))) or "-"
        print(f"| {r['scenario']} | {r['written']} | {r['landed']} | {r['duplicates']} | "
              f"{len(r['rejected'])}: {reasons} |")  # fmt: skip


if __name__ == "__main__":
    main()
