"""`RecordStore` on SQLite and on a real PostgreSQL: every rule that must hold with several API
replicas (one job per Idempotency-Key, the quota, a job ends once, one lease holder), paging,
webhook deliveries, a restart that keeps every record, and the migration matching the models.

Races run each thread through its own `RecordStore` on the same database, as replicas do."""

from __future__ import annotations

import base64
import datetime as dt
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from deploy.db.store import RecordStore
from deploy.errors import ApiRefused, IdempotencyConflict, IdentityInUse, QuotaExceeded
from deploy.records import IdentityRecord, JobRecord, TokenRecord, utc_now
from farm.errors import StorageError
from tests.api import postgres

postgres_url = postgres.postgres_url  # the fixture, for request.getfixturevalue

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
REPLICAS = 8


@dataclass
class Backend:
    name: str
    url: str
    fresh: Callable[[], str]  # the URL of another, empty database of the same kind


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Backend:
    if request.param == "sqlite":
        root = tmp_path_factory.mktemp("records")

        def fresh() -> str:  # in a folder that does not exist yet: the store makes it
            return f"sqlite:///{root / uuid.uuid4().hex[:8] / 'records.db'}"

        return Backend("sqlite", fresh(), fresh)
    url = request.getfixturevalue("postgres_url")
    return Backend("postgresql", url, lambda: postgres.make_database(url))


@pytest.fixture(scope="module")
def store(backend: Backend) -> Iterator[RecordStore]:
    made = RecordStore(backend.url)
    yield made
    made.close()


@pytest.fixture(scope="module")
def replicas(backend: Backend, store: RecordStore) -> Iterator[list[RecordStore]]:
    made = [RecordStore(backend.url, upgrade=False) for _ in range(REPLICAS)]
    yield made
    for one in made:
        one.close()


def _race(replicas: list[RecordStore], fn: Callable[[int, RecordStore], Any]) -> list[Any]:
    """Run ``fn(i, replica)`` in one thread per replica, all released at once; results or
    the exceptions raised."""
    barrier = threading.Barrier(len(replicas))

    def one(i: int) -> Any:
        barrier.wait()
        try:
            return fn(i, replicas[i])
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(len(replicas)) as pool:
        return list(pool.map(one, range(len(replicas))))


def _owner() -> str:
    return "tok" + uuid.uuid4().hex[:12]


def _job(
    owner: str,
    *,
    state: str = "queued",
    created_at: dt.datetime | None = None,
    sha: str = "a" * 64,
    identity_id: str | None = None,
    job_id: str | None = None,
) -> JobRecord:
    when = created_at or utc_now()
    job_id = job_id or "job_" + uuid.uuid4().hex[:16]
    return JobRecord.model_validate(
        {
            "job_id": job_id,
            "owner": owner,
            "state": state,
            "identity_id": identity_id,
            "spec": {"input": "/in/clip.mp4", "voice": {"mode": "vc"}, "n": [1, 2.5, None]},
            "request_sha256": sha,
            "input_path": "/in/clip.mp4",
            "output_path": f"/out/{job_id}.mp4",
            "work_dir": f"/work/{job_id}",
            "webhook_url": "https://hooks.example/farm",
            "created_at": when,
            "updated_at": when,
        }
    )


def _identity(owner: str) -> IdentityRecord:
    return IdentityRecord(
        identity_id="id_" + uuid.uuid4().hex[:16],
        owner=owner,
        pack_dir="/packs/x",
        subject="Ada",
        consent_id="consent-1",
        consent_sha256="c" * 64,
        faces=3,
        voice_refs=2,
        created_at=utc_now(),
    )


def _token(created_at: dt.datetime) -> TokenRecord:
    return TokenRecord(
        token_id=uuid.uuid4().hex[:16],
        name="studio",
        scopes=("submit", "read"),
        secret_hash="h" * 64,
        created_at=created_at,
    )


def _mine(records: list[JobRecord], owner: str) -> list[str]:
    return [r.job_id for r in records if r.owner == owner]


# -- tokens and identities ------------------------------------------------------------------


def test_tokens_are_listed_by_creation_and_revoked(store: RecordStore) -> None:
    later, earlier = _token(T0 + dt.timedelta(hours=1)), _token(T0)
    store.add_token(later)
    store.add_token(earlier)
    assert store.get_token(earlier.token_id) == earlier
    assert store.get_token("nope") is None
    listed = [t.token_id for t in store.list_tokens()]
    assert listed.index(earlier.token_id) < listed.index(later.token_id)

    assert store.revoke_token(later.token_id) is True
    revoked = store.get_token(later.token_id)
    assert revoked is not None and revoked.revoked_at is not None
    assert revoked.revoked_at.utcoffset() == dt.timedelta(0)
    assert abs(revoked.revoked_at - utc_now()) < dt.timedelta(minutes=1)
    assert revoked.scopes == ("submit", "read")
    assert store.revoke_token("nope") is False


def test_identities_are_listed_per_owner(store: RecordStore) -> None:
    a, b = _owner(), _owner()
    mine, theirs = _identity(a), _identity(b)
    store.add_identity(mine)
    store.add_identity(theirs)
    assert store.get_identity(mine.identity_id) == mine
    assert [i.identity_id for i in store.list_identities(a)] == [mine.identity_id]
    everyone = {i.identity_id for i in store.list_identities(None)}
    assert {mine.identity_id, theirs.identity_id} <= everyone


def test_an_identity_cannot_be_deleted_while_an_active_job_uses_it(store: RecordStore) -> None:
    owner = _owner()
    identity = _identity(owner)
    store.add_identity(identity)
    job, _ = store.add_job(_job(owner, identity_id=identity.identity_id))
    store.add_job(_job(owner, identity_id=identity.identity_id, state="failed"))

    with pytest.raises(IdentityInUse, match=r"1 active job.*(wait|cancel)") as refused:
        store.delete_identity(identity.identity_id)
    assert refused.value.status == 409
    assert store.get_identity(identity.identity_id) == identity

    assert store.update_job(job.job_id, state="cancelled") is not None
    assert store.delete_identity(identity.identity_id) == identity
    assert store.get_identity(identity.identity_id) is None
    assert store.delete_identity(identity.identity_id) is None


def test_a_job_and_the_deletion_of_its_identity_never_both_happen(
    store: RecordStore, replicas: list[RecordStore]
) -> None:
    for _ in range(3):
        owner = _owner()
        identity = _identity(owner)
        store.add_identity(identity)

        def act(
            i: int, replica: RecordStore, owner: str = owner, used: str = identity.identity_id
        ) -> Any:
            if i == 0:
                return replica.delete_identity(used)
            return replica.add_job(_job(owner, identity_id=used))

        deleted, *jobs = _race(replicas, act)
        created = [j for j in jobs if isinstance(j, tuple)]
        refused = [j for j in jobs if isinstance(j, ApiRefused) and j.status == 422]
        assert len(created) + len(refused) == REPLICAS - 1, jobs
        if isinstance(deleted, IdentityRecord):
            assert not created and store.get_identity(identity.identity_id) is None
        else:
            assert isinstance(deleted, IdentityInUse) and created, deleted
            assert store.get_identity(identity.identity_id) == identity
        assert store.count_active_jobs(owner) == len(created)


# -- jobs: Idempotency-Key and quota --------------------------------------------------------


def test_an_idempotency_key_makes_one_job(store: RecordStore) -> None:
    owner = _owner()
    first = _job(owner)
    assert store.add_job(first, idempotency_key="k1") == (first, True)

    again = _job(owner)  # the same request retried: a new job id, the same body hash
    assert store.add_job(again, idempotency_key="k1") == (first, False)
    assert store.get_job(again.job_id) is None
    assert store.find_idempotent(owner, "k1") == first

    with pytest.raises(IdempotencyConflict, match=rf"{first.job_id}.*different.*new key") as e:
        store.add_job(_job(owner, sha="b" * 64), idempotency_key="k1")
    assert e.value.status == 409

    other = _job(_owner())  # keys are per owner
    assert store.add_job(other, idempotency_key="k1") == (other, True)
    unkeyed = [_job(owner), _job(owner)]
    assert [store.add_job(j)[1] for j in unkeyed] == [True, True]
    assert len(_mine(store.list_jobs(owner)[0], owner)) == 3


def test_racing_requests_with_one_key_make_one_job(
    store: RecordStore, replicas: list[RecordStore]
) -> None:
    owner = _owner()
    results = _race(replicas, lambda i, r: r.add_job(_job(owner), idempotency_key="race"))
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    assert sum(created for _, created in results) == 1
    assert len({record.job_id for record, _ in results}) == 1
    assert _mine(store.list_jobs(owner)[0], owner) == [results[0][0].job_id]


def test_racing_different_requests_with_one_key_end_as_if_one_came_first(
    store: RecordStore, replicas: list[RecordStore]
) -> None:
    owner = _owner()
    shas = ["a" * 64 if i % 2 else "b" * 64 for i in range(REPLICAS)]
    results = _race(
        replicas, lambda i, r: r.add_job(_job(owner, sha=shas[i]), idempotency_key="mixed")
    )
    (winner,) = [rec for rec in _mine(store.list_jobs(owner)[0], owner)]
    won = store.get_job(winner)
    assert won is not None
    for sha, result in zip(shas, results, strict=True):
        if sha == won.request_sha256:
            assert isinstance(result, tuple) and result[0].job_id == winner
        else:
            assert isinstance(result, IdempotencyConflict), result


def test_the_quota_counts_active_jobs(store: RecordStore) -> None:
    owner = _owner()
    first, _ = store.add_job(_job(owner), max_active=2)
    store.add_job(_job(owner, state="succeeded"), max_active=2)  # ended jobs do not count
    store.add_job(_job(owner), max_active=2)
    assert store.count_active_jobs(owner) == 2
    with pytest.raises(QuotaExceeded, match=r"\b2\b") as refused:
        store.add_job(_job(owner), max_active=2)
    assert refused.value.retry_after_s == 10 and refused.value.status == 429
    assert store.add_job(_job(_owner()), max_active=2)[1] is True  # per owner

    store.update_job(first.job_id, state="failed", error="boom")
    assert store.count_active_jobs(owner) == 1
    assert store.add_job(_job(owner), max_active=2)[1] is True


def test_racing_requests_never_pass_the_quota(
    store: RecordStore, replicas: list[RecordStore]
) -> None:
    owner = _owner()
    results = _race(replicas, lambda i, r: r.add_job(_job(owner), max_active=3))
    assert sum(isinstance(r, tuple) for r in results) == 3
    assert sum(isinstance(r, QuotaExceeded) for r in results) == REPLICAS - 3
    assert store.count_active_jobs(owner) == 3


# -- jobs: updates, leases, paging ----------------------------------------------------------


def test_update_job_sets_fields_and_a_job_ends_once(
    store: RecordStore, replicas: list[RecordStore]
) -> None:
    owner = _owner()
    job, _ = store.add_job(_job(owner, created_at=T0))
    running = store.update_job(
        job.job_id, state="running", run_id="run1", status={"frames_done": 3}, resumes=1
    )
    assert running is not None
    assert (running.state, running.run_id, running.status, running.resumes) == (
        "running",
        "run1",
        {"frames_done": 3},
        1,
    )
    assert running.updated_at > job.updated_at and running.finished_at is None
    assert running.spec == job.spec and running.created_at == job.created_at

    ends = ["succeeded", "failed", "cancelled"]
    results = _race(
        replicas, lambda i, r: r.update_job(job.job_id, state=ends[i % 3], error=f"by {i}")
    )
    winners = [(i, r) for i, r in enumerate(results) if r is not None]
    assert len(winners) == 1, results
    i, ended = winners[0]
    assert isinstance(ended, JobRecord) and ended.state == ends[i % 3]
    assert ended.error == f"by {i}" and ended.finished_at is not None
    assert store.get_job(job.job_id) == ended

    assert store.update_job(job.job_id, state="cancelled") is None
    late = store.update_job(job.job_id, status={"frames_done": 9}, expect_active=False)
    assert late is not None and late.state == ended.state and late.status == {"frames_done": 9}
    assert store.update_job("job_unknown", state="failed") is None
    assert store.update_job("job_unknown", state="failed", expect_active=False) is None


def test_leases_have_one_holder_and_expired_ones_are_taken_over(store: RecordStore) -> None:
    owner = _owner()
    active = {store.add_job(_job(owner))[0].job_id for _ in range(4)}
    store.add_job(_job(owner, state="succeeded"))

    def claim(worker: str, lease_s: float = 60) -> set[str]:
        return set(_mine(store.claim_jobs(worker, lease_s=lease_s, limit=10_000), owner))

    assert claim("w1") == active
    assert claim("w2") == set()
    assert claim("w1") == active  # renewing its own leases

    assert claim("w1", lease_s=0.05) == active
    time.sleep(0.15)
    assert claim("w2") == active  # expired: taken over
    assert claim("w1") == set()

    ended = sorted(active)[0]
    store.update_job(ended, state="succeeded")  # an ended job is never leased again
    store.release_jobs("w2")
    assert claim("w3") == active - {ended}


def test_racing_workers_never_share_a_lease(
    store: RecordStore, replicas: list[RecordStore]
) -> None:
    owner = _owner()
    jobs = {store.add_job(_job(owner))[0].job_id for _ in range(12)}
    results = _race(
        replicas,
        lambda i, r: set(_mine(r.claim_jobs(f"racer{i}", lease_s=60, limit=10_000), owner)),
    )
    assert not [r for r in results if isinstance(r, BaseException)], results
    assert sum(len(r) for r in results) == len(jobs)
    assert set().union(*results) == jobs


def test_keyset_paging_lists_every_job_once_newest_first(store: RecordStore) -> None:
    owner = _owner()
    when = [T0 + dt.timedelta(seconds=s) for s in (0, 1, 2, 3, 4, 4, 4)]  # ties: by job id
    records = [store.add_job(_job(owner, created_at=w))[0] for w in when]
    # a time in another zone is the same instant, stored and returned in UTC
    east = dt.timezone(dt.timedelta(hours=2))
    records.append(
        store.add_job(_job(owner, created_at=(T0 + dt.timedelta(seconds=2.5)).astimezone(east)))[0]
    )
    expected = [
        r.job_id for r in sorted(records, key=lambda r: (r.created_at, r.job_id), reverse=True)
    ]

    def pages(limit: int, **kw: Any) -> list[list[str]]:
        out: list[list[str]] = []
        after = None
        while True:
            page, after = store.list_jobs(owner, limit=limit, after=after, **kw)
            out.append([r.job_id for r in page])
            if after is None:
                return out
            assert len(out) < 20, "paging does not end"

    got = pages(3)
    assert [len(p) for p in got] == [3, 3, 2]
    assert [job for page in got for job in page] == expected
    assert pages(8) == [expected]
    assert [len(p) for p in pages(4)] == [4, 4]  # a full last page ends with no cursor

    shifted = store.get_job(records[-1].job_id)
    assert shifted is not None and shifted.created_at == T0 + dt.timedelta(seconds=2.5)
    assert shifted.created_at.utcoffset() == dt.timedelta(0)

    for job_id in expected[1:6:2]:
        store.update_job(job_id, state="running")
    running = pages(2, state="running")
    assert [len(p) for p in running] == [2, 1]
    assert [job for page in running for job in page] == expected[1:6:2]
    assert pages(2, state="cancelled") == [[]]

    everyone, _ = store.list_jobs(None, limit=10_000)
    assert _mine(everyone, owner) == expected


@pytest.mark.parametrize(
    "cursor",
    [
        "not a cursor",
        "",
        base64.urlsafe_b64encode(b"[1, 2]").decode(),
        base64.urlsafe_b64encode(b'["2026-01-01T00:00:00", "job"]').decode(),  # no zone
        base64.urlsafe_b64encode(b'{"a": 1}').decode(),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    ],
)
def test_a_cursor_the_api_did_not_return_is_refused(store: RecordStore, cursor: str) -> None:
    with pytest.raises(ApiRefused, match="after: not a cursor this API returned") as refused:
        store.list_jobs(None, after=cursor)
    assert refused.value.status == 422


# -- webhooks -------------------------------------------------------------------------------


def test_webhook_deliveries_are_due_claimed_retried_and_given_up(store: RecordStore) -> None:
    job, _ = store.add_job(_job(_owner()))

    def claim(worker: str, lease_s: float = 60) -> list[Any]:
        got = store.claim_deliveries(worker, lease_s=lease_s, limit=10_000)
        return [d for d in got if d.job_id == job.job_id]

    delivery = store.add_delivery(job.job_id, "https://hooks.example/a", b'{"state":"ok"}\x00')
    (due,) = claim("w1")
    assert (due.delivery_id, due.body, due.attempts, due.delivered) == (
        delivery,
        b'{"state":"ok"}\x00',
        0,
        False,
    )
    assert due.next_attempt_at is not None and due.next_attempt_at <= utc_now()
    assert claim("w2") == []  # leased to w1

    now = utc_now()
    first = store.record_attempt(
        delivery, status_code=500, error="HTTP 500", delivered=False,
        next_attempt_at=now + dt.timedelta(hours=1),
    )  # fmt: skip
    assert (first.attempt, first.status_code, first.error) == (1, 500, "HTTP 500")
    assert first.at.utcoffset() == dt.timedelta(0)
    assert claim("w2") == []  # not due yet

    store.record_attempt(
        delivery, status_code=None, error="timed out", delivered=False,
        next_attempt_at=now - dt.timedelta(seconds=1),
    )  # fmt: skip
    (retry,) = claim("w2")  # due again, and the lease was cleared
    assert retry.attempts == 2
    third = store.record_attempt(
        delivery, status_code=503, error="HTTP 503", delivered=False, next_attempt_at=None
    )
    assert third.attempt == 3
    assert claim("w3") == []  # given up

    sent = store.add_delivery(job.job_id, "https://hooks.example/b", b"{}")
    assert [d.delivery_id for d in claim("w1", lease_s=0.05)] == [sent]
    time.sleep(0.15)
    assert [d.delivery_id for d in claim("w2")] == [sent]  # the expired lease is taken over
    store.record_attempt(sent, status_code=200, error=None, delivered=True, next_attempt_at=None)
    assert claim("w1") == []

    attempts = store.list_attempts(job.job_id)
    assert [(a.delivery_id, a.attempt, a.status_code) for a in attempts] == [
        (delivery, 1, 500),
        (delivery, 2, None),
        (delivery, 3, 503),
        (sent, 1, 200),
    ]
    given_up, delivered = store.list_deliveries(job.job_id)
    assert (given_up.attempts, given_up.delivered, given_up.next_attempt_at) == (3, False, None)
    assert (delivered.attempts, delivered.delivered, delivered.next_attempt_at) == (1, True, None)
    assert store.list_attempts("job_unknown") == [] and store.list_deliveries("job_unknown") == []
    with pytest.raises(StorageError, match="no webhook delivery"):
        store.record_attempt(10**9, status_code=None, error="x", delivered=False,
                             next_attempt_at=None)  # fmt: skip


# -- schema, restarts, connections ----------------------------------------------------------


def _everything(store: RecordStore, owner: str) -> dict[str, Any]:
    jobs, _ = store.list_jobs(owner, limit=1000)
    return {
        "tokens": store.list_tokens(),
        "identities": store.list_identities(None),
        "jobs": jobs,
        "job": [store.get_job(j.job_id) for j in jobs],
        "keyed": store.find_idempotent(owner, "key"),
        "deliveries": [store.list_deliveries(j.job_id) for j in jobs],
        "attempts": [store.list_attempts(j.job_id) for j in jobs],
        "active": store.count_active_jobs(owner),
    }


def _versions(url: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT version_num FROM alembic_version"))
            return [v for (v,) in rows]
    finally:
        engine.dispose()


def test_a_restart_loses_no_record(backend: Backend) -> None:
    url = backend.fresh()
    first = RecordStore(url)
    owner = _owner()
    first.add_token(_token(T0))
    first.add_identity(_identity(owner))
    job, _ = first.add_job(_job(owner, created_at=T0), idempotency_key="key")
    first.add_job(_job(owner, state="failed"))
    first.update_job(job.job_id, state="running", status={"frames_done": 1})
    first.claim_jobs("w1", lease_s=60)
    delivery = first.add_delivery(job.job_id, "https://hooks.example/x", b"body")
    first.record_attempt(delivery, status_code=502, error="HTTP 502", delivered=False,
                         next_attempt_at=T0)  # fmt: skip
    before = _everything(first, owner)
    first.close()

    again = RecordStore(url)  # migrates again: a no-op
    try:
        assert _everything(again, owner) == before
        assert again.claim_jobs("w2", lease_s=60) == []  # w1's lease survived the restart
        assert [j.job_id for j in again.claim_jobs("w1", lease_s=60)] == [job.job_id]
        assert _versions(url) == ["0001"]
    finally:
        again.close()


def test_replicas_starting_together_migrate_once(backend: Backend) -> None:
    # two databases, three stores each, all made at once (alembic's proxies are process-wide:
    # stores of one process migrating together must not run each other's DDL)
    urls = [backend.fresh(), backend.fresh()] * 3
    barrier = threading.Barrier(len(urls))

    def start(url: str) -> RecordStore:
        barrier.wait()
        return RecordStore(url)

    with ThreadPoolExecutor(len(urls)) as pool:
        started = list(pool.map(start, urls))  # raises if any start failed
    for one in started:
        one.add_token(_token(T0))
    for one in started:
        assert len(one.list_tokens()) == 3
        one.close()
    assert [_versions(url) for url in urls] == [["0001"]] * len(urls)


def test_upgrade_by_url_leaves_the_callers_logging_alone(backend: Backend) -> None:
    import logging

    from deploy.db.store import upgrade

    mine = logging.getLogger("farm.test_records")
    root = logging.getLogger()
    before = (root.level, list(root.handlers), mine.disabled, mine.level)
    url = backend.fresh()
    upgrade(url)
    upgrade(url)  # again: a no-op
    assert (root.level, list(root.handlers), mine.disabled, mine.level) == before
    assert _versions(url) == ["0001"]
    fresh = RecordStore(url, upgrade=False)
    fresh.add_token(_token(T0))
    assert len(fresh.list_tokens()) == 1
    fresh.close()


def test_the_migration_makes_the_models_schema(backend: Backend, store: RecordStore) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from deploy.db.models import Base

    engine = sa.create_engine(backend.url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []

            # the check sees drift: a model column the migration does not make
            drifted = sa.MetaData()
            for table in Base.metadata.tables.values():
                table.to_metadata(drifted)
            drifted.tables["jobs"].append_column(sa.Column("priority", sa.Integer))
            diffs = compare_metadata(context, drifted)
            assert [d[0] for d in diffs] == ["add_column"], diffs
    finally:
        engine.dispose()


def test_sqlite_files_are_shared_in_wal_mode(backend: Backend, store: RecordStore) -> None:
    if backend.name != "sqlite":
        pytest.skip("SQLite only")
    store.ping()
    path = sa.engine.make_url(backend.url).database
    assert path is not None
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_an_unreachable_database_is_a_storage_error_naming_the_masked_url() -> None:
    port = postgres.free_port()  # nobody listens there
    url = f"postgresql+psycopg://farm:s3cret@127.0.0.1:{port}/records?connect_timeout=3"
    store = RecordStore(url, upgrade=False)
    assert store.url == f"postgresql+psycopg://farm:***@127.0.0.1:{port}/records?connect_timeout=3"
    started = time.monotonic()
    with pytest.raises(StorageError) as failed:
        store.ping()
    assert time.monotonic() - started < 5
    message = str(failed.value)
    assert f"farm:***@127.0.0.1:{port}/records" in message and "s3cret" not in message
    store.close()

    with pytest.raises(StorageError, match=r"cannot migrate the records at .*farm:\*\*\*@") as e:
        RecordStore(url)
    assert "s3cret" not in str(e.value)


def test_a_sqlite_path_that_cannot_be_made_is_a_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StorageError, match="records"):
        RecordStore(f"sqlite:///{blocker / 'api' / 'records.db'}")
