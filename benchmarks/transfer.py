"""Streaming export/import of a long session (peak RSS) and what compression saves.

Run: ``python benchmarks/transfer.py [--quick]``. Each measured step runs in a fresh child
process, so its peak resident set size (``ru_maxrss``) is its own; the baseline line is a
child that only opens the manager.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import arguments

CHILD = r"""
import json, resource, sys, time
from coda_session import SessionManager
step, store, path, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
config = {"session": {"storage_path": store, "autosave_interval": 0,
                      "max_session_size": 100000}}
start = time.perf_counter()
with SessionManager(config) as m:
    m.open()
    if step == "build":
        s = m.create_session("long")
        for i in range(n):
            s.add_message({"role": "user" if i % 2 else "assistant",
                           "content": f"message {i}: " + "words " * 20})
            if i % 10000 == 9999:
                m.save_session(s)
        m.save_session(s)
    elif step == "export":
        assert m.export_session("long", path) == n
    elif step == "import":
        assert m.import_session(path, name="copy").message_count == n
elapsed = time.perf_counter() - start
print(json.dumps({"seconds": elapsed,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def child(step: str, store: Path, path: Path, n: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, step, str(store), str(path), str(n)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def streaming(n: int, work: Path) -> None:
    store, path = work / "store", work / "long.jsonl"
    base = child("open", store, path, n)
    print(f"baseline: a child that opens the manager            peak RSS {base['peak_mb']:7.1f} MB")
    built = child("build", store, path, n)
    print(f"build {n:,} messages through the API (setup)   {built['seconds']:7.1f} s")
    for step in ("export", "import"):
        got = child(step, store, path, n)
        rate = n / got["seconds"]
        verdict = "PASS" if got["peak_mb"] < 150 else "MISS"
        print(
            f"{step} {n:,} messages (JSON Lines, streamed)     {got['seconds']:7.1f} s  "
            f"{rate:9,.0f} msgs/s  peak RSS {got['peak_mb']:7.1f} MB  (< 150 MB) {verdict}"
        )
    print(f"export file: {path.stat().st_size / 1e6:,.1f} MB")


def compression(work: Path, n: int) -> None:
    import asyncio

    from coda_session import AsyncSessionManager

    rng = random.Random(7)
    vocabulary = [
        "the",
        "function",
        "returns",
        "a",
        "list",
        "of",
        "tokens",
        "error",
        "stack",
        "trace",
        "python",
        "import",
        "session",
        "user",
        "assistant",
        "tool",
        "result",
        "file",
        "line",
        "value",
        "config",
        "database",
        "query",
        "index",
        "branch",
        "message",
        "model",
    ]

    def text(words: int) -> str:
        return " ".join(rng.choice(vocabulary) for _ in range(words))

    contents = [text(rng.randint(20, 1500)) for _ in range(n)]
    plain_bytes = sum(len(c.encode()) for c in contents)

    async def store(compress: bool) -> tuple[int, int]:
        directory = work / f"c-{compress}"
        config = {
            "session": {
                "storage_path": str(directory),
                "compress_messages": compress,
                "autosave_interval": 0,
            }
        }
        async with AsyncSessionManager(config) as m:
            s = await m.create_session("long-conversation")
            for c in contents:
                s.add_message({"role": "assistant", "content": c})
            await m.save_session(s)
            info = await m.get_session_info("long-conversation")
            assert info is not None
        db = directory / "sessions.db"
        return info.size_bytes, db.stat().st_size

    off = asyncio.run(store(False))
    on = asyncio.run(store(True))
    print(
        f"compression on {n:,} messages ({plain_bytes / 1e6:.1f} MB of content, "
        "mixed lengths 20-1500 words):"
    )
    # size_bytes is the size of what get_messages() returns, the same whatever compression
    # does (so max_session_size means one thing): the saving shows in the file
    assert on[0] == off[0], (on[0], off[0])
    print(f"  size_bytes   {off[0] / 1e6:8.2f} MB either way (what get_messages() returns)")
    print(
        f"  file size    off {off[1] / 1e6:8.2f} MB   on {on[1] / 1e6:8.2f} MB   "
        f"saved {1 - on[1] / off[1]:6.1%}"
    )


def main() -> None:
    args = arguments(__doc__, quick_help="100k messages instead of 1M").parse_args()
    n = 100_000 if args.quick else 1_000_000
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        streaming(n, work)
        compression(work, 500 if args.quick else 3000)
    print(f"total {time.perf_counter() - started:.1f} s (pid {os.getpid()})")


if __name__ == "__main__":
    main()
