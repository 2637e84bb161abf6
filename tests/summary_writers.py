"""Concurrent writers of runs and epochs, as capture and people write them, for the tests
and the benchmark of the stats summaries' locking (tests/test_summary_locks.py,
bench/bench_summary_locks.py).

Each writer is a thread with its own connection. A round is one transaction of one of:
- capture: a hook's batch (run started with its settings, epochs logged, run finished),
  through ``apply_events`` in one transaction, as ``EventDelivery`` applies a batch;
- verdict: ``record_verdict`` with a verdict, a quality score and an issue (two UPDATEs of
  the run, each moving summary rows);
- judge: several ``score_epoch`` calls (scores and flags) and then a verdict, in one
  transaction, as a person judging a run's epochs does;
- cleanup: ``remove_epoch`` of one epoch, or ``delete_runs`` of a whole run (cascade).

A writer only touches runs it captured itself, so the rows two writers share are the
summary rows alone: a deadlock between them is the summaries' doing. Nothing is retried:
a deadlock (SQLSTATE 40P01) is counted and its transaction is rolled back whole.

``run_shared_writers`` puts watchers and people on the same runs instead (a person judging
a run that is still being captured); ``summary_deadlocks`` counts the deadlocks met inside
a summary trigger.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import dict_row

from lora_tracker import judging, runs
from lora_tracker.capture.apply import apply_events
from lora_tracker.capture.events import EpochLogged, RunFinished, RunStarted

MODEL_TYPES = ["SD15", "SDXL", "Flux"]
VERDICTS = ["success", "failure", "partial"]
ISSUES = ["noise", "drift", "overfit", "washed out"]
FLAGS = ["wrong-backgrounds", "random-pixels", "photorealistic"]


@dataclass
class Tally:
    """What the writers did, summed over threads."""

    committed: int = 0
    deadlocks: int = 0
    other_errors: list[BaseException] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)  # per committed transaction
    details: list[str] = field(default_factory=list)  # what each deadlock said
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, committed: int, deadlocks: int, seconds: list[float]) -> None:
        with self.lock:
            self.committed += committed
            self.deadlocks += deadlocks
            self.seconds.extend(seconds)


def _capture_batch(rng: random.Random, key: str, name: str) -> list[Any]:
    fields = {
        "model_type": rng.choice(MODEL_TYPES),
        "network_dim": rng.choice([8, 16, 32]),
        "network_alpha": rng.choice([4, 8, 16]),
        "resolution": rng.choice(["512x512", "1024x1024"]),
        "learning_rate": rng.choice([1e-4, 5e-5]),
        "optimizer": rng.choice(["AdamW8bit", "Prodigy"]),
        "num_epochs": 3,
    }
    events: list[Any] = [RunStarted(run_key=key, run_name=name, fields=fields, captured=True)]
    events += [EpochLogged(run_key=key, epoch=e, loss=0.1 + rng.random() / 10) for e in range(1, 4)]
    events.append(RunFinished(run_key=key, status=rng.choice(["completed", "failed"])))
    return events


def _verdict(conn: psycopg.Connection[Any], rng: random.Random, run_id: int) -> None:
    judging.record_verdict(
        conn,
        run_id,
        {"overall_verdict": rng.choice(VERDICTS), "quality_score": rng.randint(1, 10)},
        add_issues=[rng.choice(ISSUES)],
    )


def writer(url: str, seed: int, rounds: int, tally: Tally) -> None:
    """One writer: ``rounds`` transactions, as described above."""
    rng = random.Random(seed)
    mine: dict[int, list[int]] = {}  # run id -> its epochs still recorded
    committed = deadlocks = 0
    seconds: list[float] = []
    try:
        # as lora_tracker.db connects: no prepared statements (a transaction-mode pooler)
        with psycopg.connect(
            url, autocommit=True, row_factory=dict_row, prepare_threshold=None
        ) as conn:
            for n in range(rounds):
                kind = "capture" if len(mine) < 2 else rng.choice(
                    ["capture", "verdict", "judge", "judge", "cleanup"]
                )  # fmt: skip
                run_id = rng.choice(sorted(mine)) if mine else 0
                start = time.perf_counter()
                try:
                    with conn.transaction():
                        if kind == "capture":
                            name = f"w{seed}-{n}-{uuid.uuid4().hex[:6]}"
                            key = f"session:{name}"
                            apply_events(conn, _capture_batch(rng, key, name), runs={})
                            row = conn.execute(
                                "SELECT id FROM training_runs WHERE run_name = %s", (name,)
                            ).fetchone()
                            assert row is not None
                            new_run = int(row["id"])
                        elif kind == "verdict":
                            _verdict(conn, rng, run_id)
                        elif kind == "judge":
                            for epoch in mine[run_id]:
                                judging.score_epoch(
                                    conn, run_id, epoch,
                                    {"visual_quality_score": rng.randint(0, 10)},
                                    flags=rng.sample(FLAGS, rng.randint(0, 2)),
                                )  # fmt: skip
                            _verdict(conn, rng, run_id)
                        elif mine[run_id] and rng.random() < 0.5:
                            judging.remove_epoch(conn, run_id, mine[run_id][-1])
                        else:
                            runs.delete_runs(conn, [run_id])
                except psycopg.errors.DeadlockDetected as exc:
                    deadlocks += 1
                    tally.details.append(f"{kind}: {exc.diag.message_detail} @ {exc.diag.context}")
                    continue
                seconds.append(time.perf_counter() - start)
                committed += 1
                if kind == "capture":
                    mine[new_run] = [1, 2, 3]
                elif kind == "cleanup":
                    # what the database now holds for this run
                    left = conn.execute(
                        "SELECT epoch_number FROM epoch_results WHERE training_run_id = %s "
                        "ORDER BY epoch_number",
                        (run_id,),
                    ).fetchall()
                    exists = conn.execute(
                        "SELECT 1 FROM training_runs WHERE id = %s", (run_id,)
                    ).fetchone()
                    if exists is None:
                        del mine[run_id]
                    else:
                        mine[run_id] = [int(r["epoch_number"]) for r in left]
    except BaseException as exc:  # reported by the caller
        with tally.lock:
            tally.other_errors.append(exc)
    tally.add(committed, deadlocks, seconds)


def run_writers(url: str, writers: int, rounds: int, seed: int = 0) -> Tally:
    """``writers`` threads of ``rounds`` transactions each, started together."""
    tally = Tally()
    threads = [
        threading.Thread(target=writer, args=(url, seed * 1000 + n, rounds, tally))
        for n in range(writers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return tally


# -- shared runs: capture and people on the same runs ---------------------------------------


def shared_capture(url: str, seed: int, rounds: int, tally: Tally) -> None:
    """A watcher of several trainings: each batch logs an epoch of one or two of its runs
    (in run order, as capture writes them) and now and then starts a new run first."""
    rng = random.Random(seed)
    keys: list[str] = []
    committed = deadlocks = 0
    with psycopg.connect(url, autocommit=True, row_factory=dict_row, prepare_threshold=None) as c:
        for n in range(rounds):
            new: list[Any] = []
            key = None
            if not keys or rng.random() < 0.3:
                name = f"s{seed}-{n}-{uuid.uuid4().hex[:6]}"
                key = f"session:{name}"
                new = _capture_batch(rng, key, name)[:1]
            logged = [
                EpochLogged(run_key=k, epoch=rng.randint(1, 12), loss=0.1)
                for k in sorted(rng.sample(keys, min(2, len(keys))))
            ]
            try:
                with c.transaction():
                    apply_events(c, new + logged, runs={})
            except psycopg.errors.DeadlockDetected as exc:
                deadlocks += 1
                tally.details.append(f"capture: {exc.diag.message_detail} @ {exc.diag.context}")
                continue
            committed += 1
            if key:
                keys.append(key)
    tally.add(committed, deadlocks, [])


def shared_judge(url: str, seed: int, rounds: int, tally: Tally) -> None:
    """A person judging any run: scores two of its epochs, then the verdict."""
    rng = random.Random(seed)
    committed = deadlocks = 0
    with psycopg.connect(url, autocommit=True, row_factory=dict_row, prepare_threshold=None) as c:
        for _ in range(rounds):
            run_ids = [r["id"] for r in c.execute("SELECT id FROM training_runs").fetchall()]
            if not run_ids:
                time.sleep(0.05)
                continue
            run_id = rng.choice(run_ids)
            recorded = [
                r["epoch_number"]
                for r in c.execute(
                    "SELECT epoch_number FROM epoch_results WHERE training_run_id = %s",
                    (run_id,),
                ).fetchall()
            ]
            try:
                with c.transaction():
                    for epoch in sorted(rng.sample(recorded, min(2, len(recorded)))):
                        judging.score_epoch(
                            c, run_id, epoch, {"visual_quality_score": rng.randint(0, 10)},
                            flags=rng.sample(FLAGS, 1),
                        )  # fmt: skip
                    _verdict(c, rng, run_id)
            except psycopg.errors.DeadlockDetected as exc:
                deadlocks += 1
                tally.details.append(f"judge: {exc.diag.message_detail} @ {exc.diag.context}")
                continue
            committed += 1
    tally.add(committed, deadlocks, [])


def run_shared_writers(url: str, each: int, rounds: int, seed: int = 0) -> Tally:
    """``each`` capture threads and ``each`` judging threads on the same runs. Unlike
    `run_writers`, they share runs and epochs too, so some deadlocks may be over those rows
    (a person's epoch scores against capture's run update then epoch upsert), whatever
    the summaries do: `summary_deadlocks` tells the summaries' own apart."""
    tally = Tally()

    def guarded(target: Any, n: int) -> None:
        try:
            target(url, seed * 1000 + n, rounds, tally)
        except BaseException as exc:  # reported by the caller
            with tally.lock:
                tally.other_errors.append(exc)

    threads = [
        threading.Thread(target=guarded, args=(target, n))
        for n in range(each)
        for target in (shared_capture, shared_judge)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return tally


def summary_deadlocks(tally: Tally) -> int:
    """The deadlocks met while a summary trigger ran (its function names start stats_)."""
    return sum(1 for detail in tally.details if "stats_" in detail.split(" @ ", 1)[-1])
