"""Run history: every nightly run and every item's outcome, in an embedded SQLite file.

Default ``~/.cache/kernelagent/nightly.db`` (``--history PATH`` overrides), so trends (an entry
slowly drifting 2 % a week, a Triton upgrade that broke a kernel) can be shown without a
server. One row per run in ``runs`` and one per checked item in ``results``; items are keyed
by their stable name (``softmax/h100-sxm bf16 cols=4096``). The schema version is
``PRAGMA user_version``.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at    TEXT NOT NULL,
    finished_at   TEXT NOT NULL,
    status        TEXT NOT NULL,            -- healthy | regression | failed
    exit_code     INTEGER NOT NULL,
    mode          TEXT NOT NULL,            -- gpu | cpu
    measure       TEXT NOT NULL,            -- gpu | none | replay:FILE
    device        TEXT,
    sku           TEXT,
    torch         TEXT,
    triton        TEXT,
    kernelagent   TEXT,
    n_items       INTEGER NOT NULL,
    n_verified    INTEGER NOT NULL,
    n_failed      INTEGER NOT NULL,
    n_regressions INTEGER NOT NULL,
    out_dir       TEXT,
    environment   TEXT NOT NULL             -- the results.json environment block, JSON
);
CREATE TABLE IF NOT EXISTS results (
    run_id             INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    name               TEXT NOT NULL,
    kind               TEXT NOT NULL,       -- entry | file | default
    op                 TEXT NOT NULL,
    sku                TEXT,
    dtype              TEXT,
    bucket             TEXT,                -- JSON
    config             TEXT,                -- JSON
    status             TEXT NOT NULL,       -- ok | failed | regression
    verified           INTEGER,             -- 1 | 0 | NULL (not verified: malformed or stale)
    reason             TEXT,
    latency_us         REAL,                -- median of the new samples
    latency_ratio      REAL,                -- new / stored median
    latency_verdict    TEXT,
    energy_uj          REAL,
    energy_ratio       REAL,
    energy_verdict     TEXT,
    speedup_vs_pytorch REAL,
    roofline_pct       REAL,
    latency_samples    TEXT,                -- JSON list, µs
    energy_samples     TEXT,                -- JSON list, µJ per call
    PRIMARY KEY (run_id, name)
);
CREATE INDEX IF NOT EXISTS results_by_name ON results(name, run_id);
"""


def default_path() -> Path:
    return Path.home() / ".cache" / "kernelagent" / "nightly.db"


class History:
    """The store. Use as a context manager, or call ``close``."""

    def __init__(self, path: Path | str | None = None):
        self.path = Path(path).expanduser() if path is not None else default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), timeout=30.0)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA foreign_keys = ON")
        found = self.db.execute("PRAGMA user_version").fetchone()[0]
        if found not in (0, SCHEMA_VERSION):
            raise RuntimeError(f"{self.path}: history schema {found}, this build reads {SCHEMA_VERSION}")
        with self.db:
            self.db.executescript(_SCHEMA)
            self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def __enter__(self) -> "History":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()

    def record(self, doc: dict[str, Any]) -> int:
        """Store one run (a ``results.json`` document); returns its id."""
        env, summary = doc["environment"], doc["summary"]
        with self.db:
            cur = self.db.execute(
                "INSERT INTO runs (started_at, finished_at, status, exit_code, mode, measure, device, sku, torch, "
                "triton, kernelagent, n_items, n_verified, n_failed, n_regressions, out_dir, environment) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (doc["started_at"], doc["finished_at"], doc["status"], doc["exit_code"], env["mode"], env["measure"],
                 env.get("device"), env.get("sku"), env["versions"]["torch"], env["versions"]["triton"],
                 env["versions"]["kernelagent"], summary["items"], summary["verified"], summary["failed"],
                 summary["regressions"], doc.get("out_dir"), json.dumps(env, sort_keys=True)))
            run_id = int(cur.lastrowid)
            self.db.executemany(
                "INSERT INTO results VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [_result_row(run_id, item) for item in doc["items"]])
        return run_id

    def runs(self, limit: int = 60) -> list[dict]:
        """The latest ``limit`` runs, oldest first."""
        rows = self.db.execute("SELECT * FROM runs ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [dict(r) for r in reversed(rows)]

    def series(self, names: list[str], run_ids: list[int]) -> dict[str, list[dict]]:
        """Per item name, its results in the given runs (oldest first)."""
        if not names or not run_ids:
            return {}
        q_names, q_runs = ",".join("?" * len(names)), ",".join("?" * len(run_ids))
        rows = self.db.execute(
            f"SELECT run_id, name, status, latency_us, latency_ratio, energy_uj, energy_ratio, speedup_vs_pytorch "
            f"FROM results WHERE name IN ({q_names}) AND run_id IN ({q_runs}) ORDER BY run_id",
            (*names, *run_ids)).fetchall()
        out: dict[str, list[dict]] = {n: [] for n in names}
        for r in rows:
            out[r["name"]].append(dict(r))
        return out


def _result_row(run_id: int, item: dict) -> tuple:
    m = item.get("measurement") or {}
    lat, en = m.get("latency") or {}, m.get("energy") or {}
    ver = item.get("verification")
    verified = None if ver is None else int(bool(ver.get("verified")))
    dump = lambda v: None if v is None else json.dumps(v, sort_keys=True)  # noqa: E731
    return (run_id, item["name"], item["kind"], item["op"], item.get("sku"), item.get("dtype"), dump(item.get("bucket")),
            dump(item.get("config")), item["status"], verified, (item.get("failure") or {}).get("reason"),
            lat.get("new_median"), lat.get("ratio"), lat.get("verdict"), en.get("new_median"), en.get("ratio"),
            en.get("verdict"), m.get("speedup_vs_pytorch"), m.get("roofline_pct"),
            dump(m.get("latency_samples_us")), dump(m.get("energy_samples_uj")))
