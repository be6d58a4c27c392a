"""Developer sessions: tests, lint, typecheck, migrations, bench (`.ci/run` runs these)."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.default_venv_backend = "venv"


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite (every backend, both APIs)."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint and formatting) and import-linter (imports point down the layers).
    Ignores posargs, so `nox -s lint typecheck bench -- --quick` passes them to bench."""
    session.install("-e", ".", "ruff>=0.6", "import-linter>=2.1")
    session.run("ruff", "check", "coda_session", "migrations", "tests", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "coda_session", "migrations", "tests", "benchmarks")
    session.run("lint-imports")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package, the tests and the migrations (pyproject [tool.mypy])."""
    session.install("-e", ".[dev]")
    session.run("mypy")


@nox.session
def migrations(session: nox.Session) -> None:
    """The Alembic tests alone, plus `alembic check` against a fresh database."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", "tests/test_migrations.py", *session.posargs)


@nox.session
def soak(session: nox.Session) -> None:
    """The long variants of the crash and contention tests (many more kills, longer load)."""
    session.install("-e", ".[test]")
    session.env["CODA_SOAK"] = "1"
    session.run("python", "-m", "pytest", "-m", "soak", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks: figures and ratios against raw sqlite3 (and, with a server configured
    in CODA_BENCH_POSTGRES_URL or CODA_TEST_POSTGRES_URL, raw asyncpg) measured in the
    same run; branching's ratios are between sizes and depths of the same run."""
    session.install("-e", ".[postgresql]")
    session.run("python", "benchmarks/bench.py", *session.posargs)
    session.run("python", "benchmarks/transfer.py", *session.posargs)
    # prints one line and exits 0 when no PostgreSQL server is configured
    session.run("python", "benchmarks/postgres.py", *session.posargs)
    # copy-on-write branching (fork cost, deep-branch reads, storage of forks): SQLite, and
    # PostgreSQL when a server is configured (as above)
    session.run("python", "benchmarks/branching.py", *session.posargs)
    # full-text search and filtered listing against the LIKE scans and Python filters they
    # replace, and what the index costs the writes against the library before it (the tag
    # issue18-base, in a child process; skipped with a line when the tag is missing)
    session.run("python", "benchmarks/search.py", *session.posargs)
    # statement and round-trip counts of the common operations on every SQL path (no
    # timing: counts, the same on any machine; takes no --quick)
    session.run("python", "benchmarks/statements.py")
