"""The append-only audit log of jobs (SQLite by default).

Each row records a job's id and the run (submission) that produced it, its identity, consent id,
operator key and the sha256 of its inputs and outputs, plus a hash chain (`entry_hash` = sha256
of the previous hash and the row), so deleting or editing a row is detectable with
`verify_chain`. Triggers refuse UPDATE and DELETE outright.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from farm.errors import FarmError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    recorded_at TEXT NOT NULL,
    job_id TEXT NOT NULL,
    identity TEXT NOT NULL,
    consent_id TEXT NOT NULL,
    operator_key_id TEXT NOT NULL,
    input_sha256 TEXT NOT NULL,
    output_sha256 TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    entry_hash TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS jobs_no_update BEFORE UPDATE ON jobs
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS jobs_no_delete BEFORE DELETE ON jobs
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""
GENESIS = "0" * 64


class AuditError(FarmError):
    """The audit log cannot be written or its chain is broken."""


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    recorded_at: str
    job_id: str
    run_id: str
    identity: str
    consent_id: str
    operator_key_id: str
    input_sha256: dict[str, str]
    output_sha256: dict[str, str]
    prev_hash: str
    entry_hash: str


def _entry_hash(prev_hash: str, fields: list[str]) -> str:
    blob = json.dumps([prev_hash, *fields], separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def _chained(fields: list[str], run_id: str) -> list[str]:
    """The hashed fields; entries from before run ids existed hash without one."""
    return [*fields, run_id] if run_id else fields


class AuditLog:
    """An append-only job log in one SQLite file; open it where you append, close it after."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(str(path), isolation_level=None)
            self._db.executescript(_SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
            if "run_id" not in columns:  # logs written before runs had ids
                self._db.execute("ALTER TABLE jobs ADD COLUMN run_id TEXT NOT NULL DEFAULT ''")
        except sqlite3.Error as exc:
            raise AuditError(f"cannot open audit log {path}: {exc}") from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def append(
        self,
        *,
        job_id: str,
        run_id: str = "",
        identity: str,
        consent_id: str,
        operator_key_id: str,
        input_sha256: Mapping[str, str],
        output_sha256: Mapping[str, str],
    ) -> AuditEntry:
        """Record one job's output (before it is committed); returns the stored entry."""
        recorded_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        inputs = json.dumps(dict(input_sha256), sort_keys=True)
        outputs = json.dumps(dict(output_sha256), sort_keys=True)
        try:
            self._db.execute("BEGIN IMMEDIATE")
            last = "SELECT entry_hash FROM jobs ORDER BY seq DESC LIMIT 1"
            row = self._db.execute(last).fetchone()
            prev_hash = row[0] if row else GENESIS
            fields = [recorded_at, job_id, identity, consent_id, operator_key_id, inputs, outputs]
            entry_hash = _entry_hash(prev_hash, _chained(fields, run_id))
            cursor = self._db.execute(
                "INSERT INTO jobs (recorded_at, job_id, identity, consent_id, operator_key_id, "
                "input_sha256, output_sha256, prev_hash, entry_hash, run_id) "
                "VALUES (?,?,?,?,?,?,?,?,?,?)",
                (*fields, prev_hash, entry_hash, run_id),
            )
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise AuditError(f"cannot append to audit log {self.path}: {exc}") from None
        return AuditEntry(
            seq=int(cursor.lastrowid or 0),
            recorded_at=recorded_at,
            job_id=job_id,
            run_id=run_id,
            identity=identity,
            consent_id=consent_id,
            operator_key_id=operator_key_id,
            input_sha256=dict(input_sha256),
            output_sha256=dict(output_sha256),
            prev_hash=prev_hash,
            entry_hash=entry_hash,
        )

    def entries(self) -> list[AuditEntry]:
        rows = self._db.execute(
            "SELECT seq, recorded_at, job_id, identity, consent_id, operator_key_id, "
            "input_sha256, output_sha256, prev_hash, entry_hash, run_id FROM jobs ORDER BY seq"
        ).fetchall()
        return [
            AuditEntry(
                seq=r[0],
                recorded_at=r[1],
                job_id=r[2],
                run_id=r[10],
                identity=r[3],
                consent_id=r[4],
                operator_key_id=r[5],
                input_sha256=json.loads(r[6]),
                output_sha256=json.loads(r[7]),
                prev_hash=r[8],
                entry_hash=r[9],
            )
            for r in rows
        ]

    def verify_chain(self) -> None:
        """Raise AuditError at the first row whose hash chain does not hold."""
        prev_hash = GENESIS
        for entry in self.entries():
            fields = [
                entry.recorded_at,
                entry.job_id,
                entry.identity,
                entry.consent_id,
                entry.operator_key_id,
                json.dumps(entry.input_sha256, sort_keys=True),
                json.dumps(entry.output_sha256, sort_keys=True),
            ]
            expected = _entry_hash(prev_hash, _chained(fields, entry.run_id))
            if entry.prev_hash != prev_hash or expected != entry.entry_hash:
                raise AuditError(
                    f"audit log {self.path} is broken at entry {entry.seq} (job {entry.job_id}): "
                    "a row was edited or removed"
                )
            prev_hash = entry.entry_hash
