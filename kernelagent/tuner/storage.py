"""Where studies live: Optuna storages and study names.

The default storage (SQLite under the user cache dir), opening a storage from an object, an RDB
URL or ``":memory:"`` (retrying the schema race between workers, serialising SQLite
transactions, picking the installed PostgreSQL driver, redacting credentials in errors), and
the ``op/sku/dtype/bucket[/space-…]`` study names. Re-exported by ``search.py``.

Dead workers. A storage opened from a URL beats Optuna's heartbeat for every running trial
(``heartbeat_interval``); a trial with no beat for ``GRACE_BEATS`` intervals is failed and
enqueued again once by Optuna's retry callback, so a worker that died mid-measurement does not
hold its config (or the budget slot) for ever.
"""

from __future__ import annotations

import inspect
import os
import time
import warnings
from pathlib import Path

from ..errors import BadInput, EnvironmentProblem
from .space import SearchSpace

HEARTBEAT_S = 30   # seconds between a running trial's heartbeats
GRACE_BEATS = 4    # heartbeats missed before a trial's worker counts as dead
RETRIES = 1        # times a dead worker's trial is run again


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` on this host still exists (a process of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def default_storage_url() -> str:
    """SQLite under the user cache dir (``$XDG_CACHE_HOME`` or ``~/.cache``)/kernelagent."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kernelagent"
    base.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{base / 'studies.db'}"


def study_name_for(op: str, sku: str, dtype: str, bucket: str, space: SearchSpace | None = None) -> str:
    """``op/sku/dtype/bucket``, plus the space's fingerprint so a changed space starts afresh."""
    name = f"{op}/{sku}/{dtype}/{bucket}"
    return f"{name}/space-{space.fingerprint()}" if space is not None else name


def _storage(storage, heartbeat_s: int | None = HEARTBEAT_S):
    import optuna

    if storage is None:
        storage = default_storage_url()
    if isinstance(storage, str):
        if storage == ":memory:":
            return optuna.storages.InMemoryStorage()
        storage = normalize_storage_url(storage)
        sqlite = storage.startswith("sqlite")
        for attempt in range(3):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat_interval
                    rdb = optuna.storages.RDBStorage(
                        storage, engine_kwargs={"connect_args": {"timeout": 60}} if sqlite else None,
                        **_heartbeat_kwargs(heartbeat_s))
                break
            except Exception as e:  # bad URL, missing driver, unreachable server
                from sqlalchemy.exc import DBAPIError, OperationalError

                # Two workers creating the schema at once collide (table exists, unique key);
                # the loser retries and finds the schema made. Other errors fail at once.
                if attempt == 2 and isinstance(e, OperationalError) and not sqlite:
                    # The URL is fine; the server is not there (down, firewalled, wrong host).
                    raise EnvironmentProblem(f"cannot reach the Optuna storage {_redact(storage)}: "
                                             f"{str(e).splitlines()[0][:300]}") from e
                if attempt == 2 or not isinstance(e, DBAPIError):
                    raise BadInput(f"cannot open Optuna storage {_redact(storage)}: {e}") from e
                time.sleep(0.5 + attempt)
        if sqlite:
            _serialize_sqlite(rdb.engine)
        return rdb
    return storage


def _heartbeat_kwargs(heartbeat_s: int | None) -> dict:
    """RDBStorage's heartbeat arguments, with Optuna's retry callback for stale trials."""
    if not heartbeat_s:
        return {}
    import optuna

    # Optuna 4.9 renamed RetryFailedTrialCallback (and failed_trial_callback); the old names remain until 6.0.
    retry = (getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
             or optuna.storages.RetryFailedTrialCallback)
    params = inspect.signature(optuna.storages.RDBStorage).parameters
    arg = "heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in params else "failed_trial_callback"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        callback = retry(max_retry=RETRIES)
    beat = max(1, int(heartbeat_s))
    return {"heartbeat_interval": beat, "grace_period": GRACE_BEATS * beat, arg: callback}


def normalize_storage_url(url: str) -> str:
    """``postgresql://`` with the driver that is installed.

    SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3, older versions to psycopg2; the
    project's optional extra installs psycopg2-binary. An explicit ``+driver`` is kept as given.
    """
    import importlib.util

    for bare in ("postgresql://", "postgres://"):
        if url.startswith(bare):
            rest = url[len(bare):]
            if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
                return "postgresql+psycopg2://" + rest
            return "postgresql://" + rest
    return url


def _serialize_sqlite(engine) -> None:
    """Make every SQLite transaction ``BEGIN IMMEDIATE``.

    Python's sqlite3 runs a SELECT outside any transaction, so two processes can both read an
    enqueued trial as WAITING and both take it (PostgreSQL's row lock prevents that). Taking
    the write lock at the start of each transaction makes read-then-update atomic, at the cost
    of serialising the workers' storage calls, which are tiny next to a measurement.
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _autocommit_driver(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # let SQLAlchemy's "begin" below open transactions

    @event.listens_for(engine, "begin")
    def _begin_immediate(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened before the listeners were attached are dropped


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
