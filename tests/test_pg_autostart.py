"""The README's test command runs the postgresql backend on a machine with PostgreSQL's
server installed and no server configured: the run starts a throwaway server itself (one for
all of pytest-xdist's workers), and stops and removes it at the end. Without the binaries,
one line says how to get them; with a server configured (CI), no other is started.

Each test runs a small part of the suite in a pytest subprocess."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import (
    PG_AUTOSTART_VARIABLE,
    PG_REQUIRED_VARIABLE,
    PG_THROWAWAY_VARIABLE,
    PG_URL_VARIABLE,
    ROOT,
    pg_bindir,
    pg_server,
)

SUBSET = "tests/test_transfer_files.py::test_errors_say_what_to_do"


def _pytest(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (PG_URL_VARIABLE, PG_THROWAWAY_VARIABLE, PG_AUTOSTART_VARIABLE, PG_REQUIRED_VARIABLE)
        and not k.startswith("PYTEST_")
    }
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", *args, SUBSET],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _processes_naming(directory: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if directory in cmdline:
            found.append(cmdline)
    return found


@pytest.mark.slow
@pytest.mark.postgresql
@pytest.mark.parametrize("workers", ["2", "0"])
def test_the_run_starts_and_removes_its_own_server(workers: str) -> None:
    if pg_bindir() is None:
        pytest.skip("no PostgreSQL server binaries installed")
    done = _pytest("-n", workers)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert f"PASSED {SUBSET}[postgresql]" in out, out
    assert "SKIPPED" not in out, out
    header = re.search(r"a throwaway server \(scripts/pg-test-server\) starts in (\S+)", out)
    assert header is not None, out
    run = header.group(1)
    assert f"throwaway server in {run}: started 1 time(s)" in out, out
    assert "stopped; directory removed" in out
    assert not Path(run).exists()
    assert _processes_naming(run) == []  # no server process left


def test_without_the_binaries_one_line_says_how_to_get_them(tmp_path: Path) -> None:
    done = _pytest("-n", "0", "-q", CODA_PG_BINDIR=str(tmp_path))  # a directory without them
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert f"SKIPPED [1] {SUBSET.split('::')[0]}" in out, out
    said = [line for line in out.splitlines() if line.startswith("postgresql tests skipped:")]
    assert len(said) == 1, out
    assert "apt-get install postgresql" in said[0] and "scripts/pg-test-server start" in said[0]
    assert "throwaway server" not in out


@pytest.mark.postgresql
def test_a_configured_server_is_used_and_none_started() -> None:
    url = pg_server().url.render_as_string(hide_password=False)
    # as .ci/run sets them (scripts/pg-test-server's server is a throwaway one too)
    ci = {PG_URL_VARIABLE: url, PG_REQUIRED_VARIABLE: "1", PG_THROWAWAY_VARIABLE: "1"}
    done = _pytest("-n", "0", **ci)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert f"PASSED {SUBSET}[postgresql]" in out, out
    assert "throwaway server" not in out
