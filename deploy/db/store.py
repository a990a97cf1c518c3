"""`RecordStore`: the API's records in any SQLAlchemy database (SQLite by default, PostgreSQL in
production), migrated by Alembic, returned as the frozen models of `deploy.records`.

Every rule that must hold with several replicas is one transaction or one conditional UPDATE:
an Idempotency-Key makes one job, a job ends once, a lease has one holder.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
import zlib
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy import event, func, or_, select, update
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from deploy.db.models import (
    AttemptRow,
    DeliveryRow,
    IdempotencyRow,
    IdentityRow,
    JobRow,
    TokenRow,
)
from deploy.errors import ApiRefused, IdempotencyConflict, IdentityInUse, QuotaExceeded
from deploy.records import (
    ACTIVE_STATES,
    IdentityRecord,
    JobRecord,
    TokenRecord,
    WebhookAttempt,
    WebhookDelivery,
    utc_now,
)
from farm.errors import StorageError
from farm.pipeline.progress import TERMINAL_STATES

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
MIGRATION_LOCK = 0x46_41_52_4D  # "FARM": the PostgreSQL advisory lock migrations hold
WRITE = {"farm_begin": "BEGIN IMMEDIATE"}
"""Execution options of SQLite's writing connections: they take the write lock at BEGIN, so a
transaction that reads before it writes (a quota check, an Idempotency-Key look-up) never finds
its snapshot overtaken by another process's write (SQLITE_BUSY_SNAPSHOT, "database is locked")."""


_ALEMBIC = threading.Lock()
"""Alembic's `context` and `op` are process-wide proxies: two threads migrating at once (two
stores made together, on the same database or not) would run each other's DDL on the wrong
connection. The database locks below serialise processes; this one serialises threads."""


def _make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite files get their folder, WAL and a busy timeout."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    args: dict[str, Any] = {"pool_pre_ping": True}
    if backend == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            try:
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(
                    f"cannot make the folder of the records at "
                    f"{parsed.render_as_string(hide_password=True)}: {exc}",
                    path=str(Path(database).parent),
                ) from None
        args["connect_args"] = {"timeout": 30, "check_same_thread": False}
    elif backend == "postgresql" and "connect_timeout" not in parsed.query:
        args["connect_args"] = {"connect_timeout": 10}
    engine = sa.create_engine(parsed, **args)
    if backend == "sqlite":
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_connect(connection: Any, _record: Any) -> None:
    # Several processes (Serve replicas) share the file: WAL lets readers run beside a writer,
    # and a writer waits up to 30 s for another's lock instead of failing.
    connection.isolation_level = None  # BEGIN is ours (_sqlite_begin), not the driver's
    cursor = connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    connection.exec_driver_sql(connection.get_execution_options().get("farm_begin", "BEGIN"))


def _writer(engine: Engine) -> Engine:
    return engine.execution_options(**WRITE) if engine.dialect.name == "sqlite" else engine


def upgrade(url: str, engine: Engine | None = None) -> None:
    """Migrate the database at ``url`` to the newest schema (a no-op when it is there).

    One migration at a time: PostgreSQL holds an advisory lock, SQLite the write lock, for the
    whole upgrade, so replicas that start together wait for the first instead of colliding.
    """
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    own = engine is None
    engine = _make_engine(url) if engine is None else engine
    try:
        with _ALEMBIC, _writer(engine).begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
                )
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    finally:
        if own:
            engine.dispose()


RecordT = TypeVar("RecordT", bound=BaseModel)


def _record(model: type[RecordT], row: object, **renamed: str) -> RecordT:
    """The record of a row: each field from the column of its name (``renamed``: field=column)."""
    return model.model_validate(
        {name: getattr(row, renamed.get(name, name)) for name in model.model_fields}
    )


def _token(row: TokenRow) -> TokenRecord:
    return _record(TokenRecord, row)


def _identity(row: IdentityRow) -> IdentityRecord:
    return _record(IdentityRecord, row)


def _job(row: JobRow) -> JobRecord:
    return _record(JobRecord, row)


def _delivery(row: DeliveryRow) -> WebhookDelivery:
    return _record(WebhookDelivery, row, delivery_id="id")


def _attempt(row: AttemptRow) -> WebhookAttempt:
    return _record(WebhookAttempt, row)


def _cursor(row: JobRow) -> str:
    raw = json.dumps([row.created_at.astimezone(dt.timezone.utc).isoformat(), row.job_id])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _parse_cursor(text: str) -> tuple[dt.datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        created, job_id = json.loads(raw)
        when = dt.datetime.fromisoformat(created)
        if when.tzinfo is None or not isinstance(job_id, str):
            raise ValueError(text)
        return when, job_id
    except (ValueError, TypeError, UnicodeDecodeError):
        raise ApiRefused("after: not a cursor this API returned", status=422) from None


def _lock_key(name: str) -> int:
    """A PostgreSQL advisory lock number for ``name`` (a signed 64-bit integer)."""
    return zlib.crc32(name.encode()) | (0x7A3 << 32)


def _reason(exc: BaseException) -> str:
    return " ".join(str(getattr(exc, "orig", None) or exc).split())[:300]


class RecordStore:
    """The records of one API deployment; each process makes its own from the URL."""

    def __init__(self, url: str, *, upgrade: bool = True) -> None:
        self._masked = make_url(url).render_as_string(hide_password=True)
        self._engine = _make_engine(url)
        self._session = sessionmaker(self._engine, expire_on_commit=False)
        # Transactions that write: on SQLite they hold the write lock from BEGIN (see WRITE).
        self._write = sessionmaker(_writer(self._engine), expire_on_commit=False)
        if upgrade:
            self._upgrade()

    def _upgrade(self) -> None:
        try:
            try:
                upgrade(self._masked, self._engine)
            except SQLAlchemyError:
                # Should two migrations still collide (say, with a replica of an older version
                # that took no lock), the second look finds the schema there.
                upgrade(self._masked, self._engine)
        except SQLAlchemyError as exc:
            raise StorageError(
                f"cannot migrate the records at {self._masked}: {_reason(exc)}"
            ) from None

    @property
    def url(self) -> str:
        """The database URL with any password masked (for messages)."""
        return self._masked

    def ping(self) -> None:
        try:
            with self._engine.connect() as connection:
                connection.execute(sa.text("SELECT 1"))
        except SQLAlchemyError as exc:
            raise StorageError(
                f"the records at {self._masked} do not answer: {_reason(exc)}"
            ) from None

    def close(self) -> None:
        self._engine.dispose()

    # -- tokens -----------------------------------------------------------------------------

    def add_token(self, record: TokenRecord) -> None:
        with self._write.begin() as s:
            s.add(
                TokenRow(
                    token_id=record.token_id,
                    name=record.name,
                    scopes=list(record.scopes),
                    secret_hash=record.secret_hash,
                    created_at=record.created_at,
                    revoked_at=record.revoked_at,
                )
            )

    def get_token(self, token_id: str) -> TokenRecord | None:
        with self._session() as s:
            row = s.get(TokenRow, token_id)
            return None if row is None else _token(row)

    def list_tokens(self) -> list[TokenRecord]:
        with self._session() as s:
            return [_token(r) for r in s.scalars(select(TokenRow).order_by(TokenRow.created_at))]

    def revoke_token(self, token_id: str) -> bool:
        with self._write.begin() as s:
            row = s.get(TokenRow, token_id)
            if row is None:
                return False
            row.revoked_at = row.revoked_at or utc_now()
            return True

    # -- identities -------------------------------------------------------------------------

    def add_identity(self, record: IdentityRecord) -> None:
        with self._write.begin() as s:
            s.add(IdentityRow(**record.model_dump()))

    def get_identity(self, identity_id: str) -> IdentityRecord | None:
        with self._session() as s:
            row = s.get(IdentityRow, identity_id)
            return None if row is None else _identity(row)

    def list_identities(self, owner: str | None) -> list[IdentityRecord]:
        query = select(IdentityRow).order_by(IdentityRow.created_at)
        if owner is not None:
            query = query.where(IdentityRow.owner == owner)
        with self._session() as s:
            return [_identity(r) for r in s.scalars(query)]

    def delete_identity(self, identity_id: str) -> IdentityRecord | None:
        with self._write.begin() as s:
            row = s.get(IdentityRow, identity_id, with_for_update=True)
            if row is None:
                return None
            active = s.scalar(
                select(func.count())
                .select_from(JobRow)
                .where(JobRow.identity_id == identity_id, JobRow.state.in_(ACTIVE_STATES))
            )
            if active:
                raise IdentityInUse(
                    f"identity {identity_id} is used by {active} active job(s); wait for them to "
                    "end or cancel them, then delete it"
                )
            record = _identity(row)
            s.delete(row)
            return record

    # -- jobs -------------------------------------------------------------------------------

    def find_idempotent(self, owner: str, key: str) -> JobRecord | None:
        """The job an Idempotency-Key made for ``owner``, if any."""
        with self._session() as s:
            row = s.scalar(
                select(JobRow)
                .join(IdempotencyRow, IdempotencyRow.job_id == JobRow.job_id)
                .where(IdempotencyRow.owner == owner, IdempotencyRow.key == key)
            )
            return None if row is None else _job(row)

    def add_job(
        self,
        record: JobRecord,
        *,
        idempotency_key: str | None = None,
        max_active: int | None = None,
    ) -> tuple[JobRecord, bool]:
        """Insert a job; with a key already used, (that job, False) or `IdempotencyConflict`;
        `QuotaExceeded` when ``max_active`` of the owner's jobs are active already.

        The checks and the insert are one transaction that holds the owner's lock (SQLite: the
        write lock; PostgreSQL: an advisory lock on the owner), so racing requests end as if
        they came one after another: one job per key, never more than ``max_active``.
        """
        try:
            with self._write.begin() as s:
                if s.get_bind().dialect.name == "postgresql":
                    s.execute(
                        sa.text("SELECT pg_advisory_xact_lock(:key)"),
                        {"key": _lock_key("jobs:" + record.owner)},
                    )
                if idempotency_key is not None:
                    existing = self._keyed(s, record.owner, idempotency_key)
                    if existing is not None:
                        return self._same_request(existing, record, idempotency_key), False
                # The identity row is locked as `delete_identity` locks it, so a job and the
                # deletion of its identity never both commit.
                if record.identity_id is not None and (
                    s.get(IdentityRow, record.identity_id, with_for_update=True) is None
                ):
                    raise ApiRefused(
                        f"settings.identity: identity {record.identity_id} was deleted",
                        status=422,
                    )
                if max_active is not None:
                    active = s.scalar(
                        select(func.count())
                        .select_from(JobRow)
                        .where(JobRow.owner == record.owner, JobRow.state.in_(ACTIVE_STATES))
                    )
                    if (active or 0) >= max_active:
                        raise QuotaExceeded(
                            f"the token already has {active} active jobs (the quota is "
                            f"{max_active}); wait for one to end or cancel one",
                            retry_after_s=10,
                        )
                s.add(JobRow(**record.model_dump()))
                s.flush()
                if idempotency_key is not None:
                    s.add(
                        IdempotencyRow(
                            owner=record.owner,
                            key=idempotency_key,
                            request_sha256=record.request_sha256,
                            job_id=record.job_id,
                        )
                    )
            return record, True
        except IntegrityError:
            if idempotency_key is None:
                raise
            # A racing request with the same key committed first: answer as it would have.
            with self._session() as s:
                existing = self._keyed(s, record.owner, idempotency_key)
            if existing is None:
                raise
            return self._same_request(existing, record, idempotency_key), False

    @staticmethod
    def _keyed(s: Session, owner: str, key: str) -> JobRow | None:
        return s.scalar(
            select(JobRow)
            .join(IdempotencyRow, IdempotencyRow.job_id == JobRow.job_id)
            .where(IdempotencyRow.owner == owner, IdempotencyRow.key == key)
        )

    @staticmethod
    def _same_request(existing: JobRow, record: JobRecord, key: str) -> JobRecord:
        if existing.request_sha256 != record.request_sha256:
            raise IdempotencyConflict(
                f"Idempotency-Key {key[:40]!r} was used for job {existing.job_id} with a "
                "different request; use a new key for a new job"
            )
        return _job(existing)

    def get_job(self, job_id: str) -> JobRecord | None:
        with self._session() as s:
            row = s.get(JobRow, job_id)
            return None if row is None else _job(row)

    def list_jobs(
        self,
        owner: str | None,
        *,
        state: str | None = None,
        limit: int = 50,
        after: str | None = None,
    ) -> tuple[list[JobRecord], str | None]:
        """Newest first, ``limit`` at a time; the second item is the next page's cursor."""
        query = select(JobRow).order_by(JobRow.created_at.desc(), JobRow.job_id.desc())
        if owner is not None:
            query = query.where(JobRow.owner == owner)
        if state is not None:
            query = query.where(JobRow.state == state)
        if after is not None:
            created, job_id = _parse_cursor(after)
            query = query.where(
                or_(
                    JobRow.created_at < created,
                    sa.and_(JobRow.created_at == created, JobRow.job_id < job_id),
                )
            )
        with self._session() as s:
            rows = list(s.scalars(query.limit(limit + 1)))
        following = _cursor(rows[limit - 1]) if len(rows) > limit else None
        return [_job(r) for r in rows[:limit]], following

    def count_active_jobs(self, owner: str) -> int:
        with self._session() as s:
            return int(
                s.scalar(
                    select(func.count())
                    .select_from(JobRow)
                    .where(JobRow.owner == owner, JobRow.state.in_(ACTIVE_STATES))
                )
                or 0
            )

    def update_job(
        self,
        job_id: str,
        *,
        state: str | None = None,
        run_id: str | None = None,
        status: dict[str, Any] | None = None,
        error: str | None = None,
        resumes: int | None = None,
        expect_active: bool = True,
    ) -> JobRecord | None:
        """Change a job; with ``expect_active`` only while it is active, so it ends once.
        Returns the changed record, or None when nothing changed."""
        now = utc_now()
        values: dict[str, Any] = {"updated_at": now}
        for name, value in (
            ("state", state),
            ("run_id", run_id),
            ("status", status),
            ("error", error),
            ("resumes", resumes),
        ):
            if value is not None:
                values[name] = value
        if state in TERMINAL_STATES:
            values["finished_at"] = now
            values["lease_owner"] = None
            values["lease_expires"] = None
        statement = update(JobRow).where(JobRow.job_id == job_id).values(**values)
        if expect_active:
            statement = statement.where(JobRow.state.in_(ACTIVE_STATES))
        with self._write.begin() as s:
            changed = s.execute(statement).rowcount  # type: ignore[attr-defined]
            if not changed:
                return None
            row = s.get(JobRow, job_id, populate_existing=True)
            return None if row is None else _job(row)

    def claim_jobs(self, worker: str, *, lease_s: float, limit: int = 100) -> list[JobRecord]:
        """Lease active jobs to ``worker`` (free, expired or already its own)."""
        now = utc_now()
        with self._session() as s:
            candidates = list(
                s.scalars(
                    select(JobRow.job_id)
                    .where(
                        JobRow.state.in_(ACTIVE_STATES),
                        or_(
                            JobRow.lease_owner.is_(None),
                            JobRow.lease_expires < now,
                            JobRow.lease_owner == worker,
                        ),
                    )
                    .order_by(JobRow.created_at)
                    .limit(limit)
                )
            )
        claimed: list[JobRecord] = []
        expires = now + dt.timedelta(seconds=lease_s)
        for job_id in candidates:
            with self._write.begin() as s:
                changed = s.execute(
                    update(JobRow)
                    .where(
                        JobRow.job_id == job_id,
                        JobRow.state.in_(ACTIVE_STATES),
                        or_(
                            JobRow.lease_owner.is_(None),
                            JobRow.lease_expires < now,
                            JobRow.lease_owner == worker,
                        ),
                    )
                    .values(lease_owner=worker, lease_expires=expires)
                ).rowcount  # type: ignore[attr-defined]
                if changed:
                    row = s.get(JobRow, job_id, populate_existing=True)
                    if row is not None:
                        claimed.append(_job(row))
        return claimed

    def release_jobs(self, worker: str) -> None:
        with self._write.begin() as s:
            s.execute(
                update(JobRow)
                .where(JobRow.lease_owner == worker)
                .values(lease_owner=None, lease_expires=None)
            )

    # -- webhooks ---------------------------------------------------------------------------

    def add_delivery(self, job_id: str, url: str, body: bytes) -> int:
        with self._write.begin() as s:
            row = DeliveryRow(
                job_id=job_id,
                url=url,
                body=body,
                attempts=0,
                next_attempt_at=utc_now(),
                delivered=False,
            )
            s.add(row)
            s.flush()
            return int(row.id)

    def claim_deliveries(
        self, worker: str, *, lease_s: float, limit: int = 20
    ) -> list[WebhookDelivery]:
        now = utc_now()
        free = or_(
            DeliveryRow.lease_owner.is_(None),
            DeliveryRow.lease_expires < now,
            DeliveryRow.lease_owner == worker,
        )
        due = sa.and_(
            DeliveryRow.delivered.is_(False),
            DeliveryRow.next_attempt_at.is_not(None),
            DeliveryRow.next_attempt_at <= now,
        )
        with self._session() as s:
            ids = list(
                s.scalars(
                    select(DeliveryRow.id).where(due, free).order_by(DeliveryRow.id).limit(limit)
                )
            )
        claimed = []
        for delivery_id in ids:
            with self._write.begin() as s:
                changed = s.execute(
                    update(DeliveryRow)
                    .where(DeliveryRow.id == delivery_id, due, free)
                    .values(lease_owner=worker, lease_expires=now + dt.timedelta(seconds=lease_s))
                ).rowcount  # type: ignore[attr-defined]
                if changed:
                    row = s.get(DeliveryRow, delivery_id, populate_existing=True)
                    if row is not None:
                        claimed.append(_delivery(row))
        return claimed

    def record_attempt(
        self,
        delivery_id: int,
        *,
        status_code: int | None,
        error: str | None,
        delivered: bool,
        next_attempt_at: dt.datetime | None,
    ) -> WebhookAttempt:
        """Append an attempt; ``next_attempt_at`` None and not delivered means given up."""
        with self._write.begin() as s:
            row = s.get(DeliveryRow, delivery_id, with_for_update=True)
            if row is None:
                raise StorageError(f"no webhook delivery {delivery_id}")
            row.attempts += 1
            row.delivered = delivered
            row.next_attempt_at = None if delivered else next_attempt_at
            row.lease_owner = None
            row.lease_expires = None
            attempt = AttemptRow(
                delivery_id=delivery_id,
                job_id=row.job_id,
                attempt=row.attempts,
                at=utc_now(),
                status_code=status_code,
                error=error,
            )
            s.add(attempt)
            s.flush()
            return _attempt(attempt)

    def list_attempts(self, job_id: str) -> list[WebhookAttempt]:
        with self._session() as s:
            rows = s.scalars(
                select(AttemptRow).where(AttemptRow.job_id == job_id).order_by(AttemptRow.id)
            )
            return [_attempt(r) for r in rows]

    def list_deliveries(self, job_id: str) -> list[WebhookDelivery]:
        with self._session() as s:
            rows = s.scalars(
                select(DeliveryRow).where(DeliveryRow.job_id == job_id).order_by(DeliveryRow.id)
            )
            return [_delivery(r) for r in rows]
