"""PostgreSQL's dialect: SQLSTATE rules, server settings, engine options, its runner."""

from __future__ import annotations

import sys
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler

from ....config import SessionConfig
from ..alchemy import AlchemyDialect
from ..dialect import WRITE_OPTION, Failure, Runner, SearchStatements, driver_error
from ..statements import TreeLock
from .search import PG_SEARCH
from .settings import postgres_engine_options

__all__ = [
    "POSTGRESQL",
    "UNIQUE_NAME_CONSTRAINT",
    "PostgresDialect",
]


# SQLSTATE codes (https://www.postgresql.org/docs/current/errcodes-appendix.html): exact
# codes first, then the two-character class
_PG_CODES = {
    "40001": Failure.CONFLICT,  # serialization_failure
    "40P01": Failure.CONFLICT,  # deadlock_detected
    "55P03": Failure.BUSY,  # lock_not_available: lock_timeout (busy_timeout) ran out
    "57014": Failure.INTERRUPTED,  # query_canceled (a cancelled operation)
    "57P01": Failure.CONNECTION,  # admin_shutdown: the server is stopping
    "57P02": Failure.CONNECTION,  # crash_shutdown
    "57P03": Failure.CONNECTION,  # cannot_connect_now: the server is starting
    "53100": Failure.FULL,  # disk_full
    "25006": Failure.READ_ONLY,  # read_only_sql_transaction
    "28P01": Failure.AUTH,  # invalid_password
    "28000": Failure.AUTH,  # invalid_authorization_specification
    "3D000": Failure.NO_DATABASE,  # invalid_catalog_name
    "XX001": Failure.CORRUPT,  # data_corrupted
    "XX002": Failure.CORRUPT,  # index_corrupted
}
_PG_CLASSES = {"08": Failure.CONNECTION, "58": Failure.IO}
#: The unique constraint on ``sessions.name`` (the naming convention in tables.py); a
#: duplicate primary key (pk_sessions) is another failure, not "the name is taken".
UNIQUE_NAME_CONSTRAINT = "uq_sessions_name"


def _sqlstate(err: BaseException) -> str | None:
    code = getattr(err, "sqlstate", None)
    if isinstance(code, str):
        return code
    # SQLAlchemy's asyncpg adapter keeps the asyncpg error as the cause
    cause = err.__cause__
    code = getattr(cause, "sqlstate", None)
    return code if isinstance(code, str) else None


def _constraint(err: BaseException) -> str | None:
    for candidate in (err, err.__cause__):
        name = getattr(candidate, "constraint_name", None)
        if isinstance(name, str):
            return name
    return None


class PostgresDialect(AlchemyDialect):
    """PostgreSQL: errors by SQLSTATE (asyncpg's ``sqlstate``, also through SQLAlchemy's
    adapter); connections that fail or drop are told apart from database errors."""

    name = "postgresql"
    search: SearchStatements | None = PG_SEARCH

    def classify(self, exc: BaseException) -> Failure:
        err = driver_error(exc)
        code = _sqlstate(err)
        if code is None:
            if isinstance(err, TimeoutError):
                return Failure.TIMEOUT
            if isinstance(err, OSError) or _is_connection_error(err):
                return Failure.CONNECTION
            return Failure.OTHER
        if code == "23505":  # unique_violation
            constraint = _constraint(err)
            return Failure.UNIQUE_NAME if constraint == UNIQUE_NAME_CONSTRAINT else Failure.OTHER
        return _PG_CODES.get(code) or _PG_CLASSES.get(code[:2], Failure.OTHER)

    def retryable(self, failure: Failure) -> bool:
        # the transaction was rolled back whole: running it again is safe. A lost
        # connection is not retried here: a write may or may not have committed.
        return failure in (Failure.BUSY, Failure.CONFLICT)

    def engine_options(
        self, config: SessionConfig, url: URL, *, migrations: bool
    ) -> dict[str, Any]:
        return postgres_engine_options(config)

    def hold_migration_lock(self, conn: Connection, key: int) -> None:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})

    def transaction_options(self, write: bool) -> dict[str, Any]:
        """A read of several statements sees one snapshot (REPEATABLE READ, read only), as
        on the library's own runner; a write runs at READ COMMITTED whatever the server's
        default, so one that waited for a lock (a tree's, a row's) then reads what the
        holder committed."""
        if write:
            return {WRITE_OPTION: True, "isolation_level": "READ COMMITTED"}
        return {
            WRITE_OPTION: False,
            "isolation_level": "REPEATABLE READ",
            "postgresql_readonly": True,
        }

    async def fast_runner(self, config: SessionConfig, url: URL, *, inline: bool) -> Runner | None:
        from .runner import PgRunner  # asyncpg is imported only when it is used

        runner = PgRunner(url, config)
        await runner.open()
        return runner


def _is_connection_error(err: BaseException) -> bool:
    """asyncpg's errors for an operation on a closed connection (a plain InterfaceError,
    without SQLSTATE) or on one whose protocol is out of step (InternalClientError, as
    after a server restart the client had not noticed), recognised by type, never by
    message. asyncpg is looked up, not
    imported: when it was never imported, no error can be one of its own."""
    asyncpg = sys.modules.get("asyncpg")
    if asyncpg is None:
        return False
    interface = asyncpg.exceptions.InterfaceError
    internal = asyncpg.exceptions.InternalClientError  # its protocol out of step: unusable
    for candidate in (err, err.__cause__):
        if candidate is not None and (
            type(candidate) is interface or isinstance(candidate, internal)
        ):
            return True
    return False


@compiles(TreeLock, "postgresql")
def _advisory_tree_lock(element: TreeLock, compiler: SQLCompiler, **kw: Any) -> str:
    # held until the transaction ends (see branching.lock_tree)
    return f"pg_advisory_xact_lock({compiler.process(element.clauses, **kw)})"


POSTGRESQL = PostgresDialect()
