"""PostgreSQL's connection settings, for the library's own connections and SQLAlchemy's."""

from __future__ import annotations

from typing import Any

from ....config import SessionConfig

__all__ = ["postgres_engine_options", "postgres_server_settings"]


def postgres_server_settings(config: SessionConfig) -> dict[str, str]:
    """The session settings of every PostgreSQL connection: ``busy_timeout`` bounds lock
    waits (``lock_timeout``, milliseconds; 0 there means "wait forever", so a zero
    busy_timeout is 1 ms), and the time zone is UTC.

    Bitmap scans are off: every read of messages wants a range of an index in order, most
    of them only its newest rows; a bitmap scan reads the whole range and sorts it. Where
    the statistics are stale (a table that just grew by 100k rows, before autovacuum
    analyzed it) the planner picked one for a 50-message tail of a fresh branch, and read
    all 100k rows of its source (116 ms instead of 0.4 ms).

    Transactions default to READ COMMITTED whatever the server's or database's default: a
    write that waited for a lock then reads what the holder committed (at REPEATABLE READ
    it would fail to serialize and run again). Multi-statement transactions also ask for
    their level explicitly; this covers a one-statement write such as the append."""
    lock_ms = max(1, int(config.busy_timeout * 1000))
    return {
        "lock_timeout": str(lock_ms),
        "TimeZone": "UTC",
        "application_name": "coda_session",
        "enable_bitmapscan": "off",
        "default_transaction_isolation": "read committed",
    }


def _same_text(value: Any) -> Any:
    return value


def postgres_engine_options(config: SessionConfig) -> dict[str, Any]:
    """``create_async_engine`` options for PostgreSQL (asyncpg): the pool's size, the
    connect timeout, the session settings, a ping before a pooled connection is reused
    (the server may have restarted), and JSON passed through as the text the codec wrote
    (SQLAlchemy's asyncpg dialect otherwise decodes JSON columns itself)."""
    return {
        "pool_size": config.connection_pool_size,
        "max_overflow": 0,  # connection_pool_size is the most connections, as documented
        "pool_pre_ping": True,
        "json_serializer": _same_text,
        "json_deserializer": _same_text,
        "connect_args": {
            "timeout": config.connect_timeout,
            "server_settings": postgres_server_settings(config),
        },
    }
