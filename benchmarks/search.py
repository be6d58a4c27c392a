"""Full-text search and filtered listing (issue 18) against the scans they replace.

Run ``python benchmarks/search.py`` (the 200k- and 1M-message stores: tens of minutes) or
``python benchmarks/search.py --quick`` (small sizes, well under a minute; the CI smoke run).
``--only`` picks parts: ``1`` building the stores (an import of a generated export), ``2``
search, ``3`` filtered ``list_sessions``, ``4`` what the index costs the writes (2 needs 1).
PostgreSQL rows need ``CODA_BENCH_POSTGRES_URL`` or ``CODA_TEST_POSTGRES_URL`` (as
``postgres.py``); ``--backend sqlite`` or ``--backend postgresql`` runs one backend.

The corpus is generated here, deterministically (a seeded generator): sessions of 50-500
messages (a tenth of them branches of an earlier session, sharing its first messages),
prose over a Zipf-distributed vocabulary, code with identifiers and paths, tool calls and
their outputs, structured contents, some Chinese and Japanese; one term planted rarely, one
in a third of all messages, a phrase and a family of words sharing a prefix. It is written
as an ``export_store`` stream and loaded with ``import_store``, the library's bulk path.

Every search figure is the median of repeated ``perf_counter`` timings of the public call
(``await manager.search(...)``, snippets included), taken interleaved in rotating order with
the ``LIKE`` scan it replaces, on the same database in the same run: raw ``sqlite3``
``SELECT ... WHERE content LIKE '%term%' ORDER BY id DESC LIMIT 20`` (raw asyncpg ``ILIKE``
on PostgreSQL). Filtered listing is set against ``list_sessions()`` and a Python filter.

What the index costs the writes is measured against the library without it: the checkout
before issue 18 (``--baseline``, a git ref or a directory holding ``coda_session`` and
``migrations``; default the tag ``issue18-base`` when the repository has it), each library in
a child process of its own (``PYTHONPATH``), driven in alternating rounds (ABAB) with the same
messages. Without a baseline those rows are skipped with a line saying why. Each target
prints PASS or MISS; nothing fails on timing and the script exits 0.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import os
import random
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from harness import (
    Server,
    Table,
    arguments,
    environment,
    interleaved,
    median,
    mode,
    postgres_url,
    rotate,
    section,
    verdict,
)

# -- sizes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    stores: tuple[int, ...]  # 1, 2: messages of each generated store
    search_repeats: int  # 2: timings per query and contender (medians)
    list_sessions: int  # 3: sessions of the listing store
    list_repeats: int
    append_ops: int  # 4: durable single-message saves per library
    append_rounds: int  # ... in this many alternating rounds
    bulk_messages: int  # 4: messages of one big save
    bulk_repeats: int  # ... per library, alternating
    pg_baseline_import: int  # 1: the baseline imports into PostgreSQL up to this size


FULL = Sizes(
    stores=(200_000, 1_000_000),
    search_repeats=7,
    list_sessions=100_000,
    list_repeats=7,
    append_ops=1_000,
    append_rounds=10,
    bulk_messages=20_000,
    bulk_repeats=4,
    pg_baseline_import=200_000,
)
QUICK = Sizes(
    stores=(10_000,),
    search_repeats=5,
    list_sessions=5_000,
    list_repeats=5,
    append_ops=100,
    append_rounds=2,
    bulk_messages=2_000,
    bulk_repeats=2,
    pg_baseline_import=0,
)

TABLE_HEAD = ("#", "backend", "measurement", "median", "baseline", "ratio", "target", "verdict")

#: The page size of every search and listing here (the library's default for search).
PAGE = 20
SEED = 18


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.2f} ms"


def per_s(count: float, seconds: float) -> str:
    return f"{count / seconds:,.0f}/s" if seconds > 0 else "-"


# -- the corpus ---------------------------------------------------------------------------

# The planted terms: none of them (nor a word sharing the prefix) is in the vocabulary.
RARE = "zanzibarquux"  # one message in RARE_EVERY
RARE_EVERY = 25_000
RARE_AT = 1_234
COMMON = "migration"  # one message in three ("migrations" too: the same stem)
PHRASE = ("connection", "refused")  # both words are common alone; the phrase in 1 in 500
PREFIX = "optim"  # optimize, optimizer, ... in 1 in 200
PREFIX_WORDS = ("optimize", "optimizer", "optimization", "optimistic", "optimal")
CJK_WORD = "会话"  # in a third of the Chinese messages

_ENGLISH_TEXT = (
    "the of and to a in is it you that he was for on are with as i his they be at one have "
    "this from or had by not word but what some we can out other were all there when up use "
    "your how said an each she which do their time if will way about many then them write "
    "would like so these her long make thing see him two has look more day could go come did "
    "number sound no most people my over know water than call first who may down side been "
    "now find any new work part take get place made live where after back little only round "
    "man year came show every good me give our under name very through just form sentence "
    "great think say help low line differ turn cause much mean before move right boy old too "
    "same tell does set three want air well also play small end put home read hand port large "
    "spell add even land here must big high such follow act why ask men change went light "
    "kind off need house picture try us again animal point mother world near build self earth "
    "father head stand own page should country found answer school grow study still learn "
    "plant cover food sun four between state keep eye never last let thought city tree cross "
    "farm hard start might story saw far sea draw left late run while press close night real "
    "life few north"
)
_TECH_TEXT = (
    "function error database query index branch message model session user assistant tool "
    "result file value config import python test patch suite commit schema table column row "
    "cursor token stream timeout retry request response server client cache lock transaction "
    "rollback fix bug issue review deploy release version module package class method "
    "argument return exception trace stack log debug warning connection refused failed passed "
    "async await thread process memory disk network socket path json yaml sql sqlite postgres "
    "http api endpoint header payload queue worker job task schedule metric latency "
    "throughput benchmark profile"
)
# the texts are word lists (one word per space), kept short on the page
_ENGLISH, _TECH = _ENGLISH_TEXT.split(), _TECH_TEXT.split()
_VERBS_TEXT = "get set load save parse build read write find check make run fetch update delete"
_VERBS = _VERBS_TEXT.split()
_TOOLS = ("read_file", "write_file", "run_tests", "grep", "list_dir", "apply_patch", "shell")
_CHARS = (
    "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成可主发年动同工也能下过"
    "子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两"
    "体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新"
)
_CJK_WORDS = (
    "数据库",
    "搜索",
    "迁移",
    "错误",
    "测试",
    "分支",
    "代码",
    "文件",
    "用户",
    "索引",
    "セッション",
    "データベース",
    "エラー",
    "テスト",
    "ブランチ",
    "検索",
    "の",
    "を",
    "は",
    "です",
    "ます",
)
_TAGS = ("client-x", "client-y", "internal", "urgent", "research", "billing", "support")
_TEAMS = ("infra", "data", "web", "mobile", "ml", "sec", "ops")


_ONSETS = "b c d f g h j k l m n p r s t v w z br ch dr fl gr kr pl sh st th tr"
_VOWELS = "a e i o u ai ea ou"


def _pseudo_words(rng: random.Random, count: int) -> list[str]:
    """Made-up words (2-4 syllables): the long tail of the vocabulary."""
    onsets, vowels = _ONSETS.split(), _VOWELS.split()
    taken = set(_ENGLISH) | set(_TECH)
    out: list[str] = []
    while len(out) < count:
        word = "".join(
            rng.choice(onsets) + rng.choice(vowels) for _ in range(rng.randint(2, 4))
        ) + rng.choice(("", "", "n", "r", "s", "t"))
        if word in taken or word.startswith((PREFIX, COMMON[:6])) or RARE[:6] in word:
            continue
        taken.add(word)
        out.append(word)
    return out


@dataclass
class Plan:
    """What a generated store holds: counts, and the sessions the probes search in."""

    messages: int = 0  # stored rows (a branch's shared messages are stored once)
    sessions: int = 0
    branches: int = 0
    planted: dict[str, int] = field(default_factory=dict)  # term -> messages holding it
    probe_root: str = ""  # a root session of about 500 messages
    probe_branch: str = ""  # the branch showing the most messages
    bytes: int = 0  # of the export file


class Corpus:
    """The deterministic generator of messages and stores."""

    def __init__(self, seed: int = SEED) -> None:
        rng = random.Random(seed)
        self.words = [*_ENGLISH, *_TECH, *_pseudo_words(rng, 20_000)]
        weights = [1.0 / (rank + 2) ** 1.05 for rank in range(len(self.words))]
        total = 0.0
        self.cum: list[float] = []
        for w in weights:
            total += w
            self.cum.append(total)
        # texts are drawn from pools built once, so generating a million messages stays
        # well under a minute
        self.sentences = [self._sentence(rng) for _ in range(30_000)]
        self.idents = [self._ident(rng) for _ in range(3_000)]
        self.paths = [
            f"src/{rng.choice(self.words[:400])}/{rng.choice(self.words[100:3000])}_"
            f"{rng.choice(self.words[:2000])}.py"
            for _ in range(2_000)
        ]
        self.cjk = [self._cjk(rng) for _ in range(2_000)]

    def _draw(self, rng: random.Random, k: int) -> list[str]:
        return rng.choices(self.words, cum_weights=self.cum, k=k)

    def _sentence(self, rng: random.Random) -> str:
        words = self._draw(rng, rng.randint(5, 16))
        return words[0].capitalize() + " " + " ".join(words[1:]) + "."

    def _ident(self, rng: random.Random) -> str:
        a, b = self._draw(rng, 2)
        kind = rng.random()
        if kind < 0.35:
            return f"{rng.choice(_VERBS)}_{a}"
        if kind < 0.65:
            return f"{a.capitalize()}{b.capitalize()}"
        if kind < 0.75:
            return f"E{rng.randint(100, 999)}"
        if kind < 0.85:
            return f"ERR_{a.upper()}_{b.upper()}"
        return f"{a}.{b.capitalize()}Error"

    def _cjk(self, rng: random.Random) -> str:
        parts = []
        for _ in range(rng.randint(6, 16)):
            if rng.random() < 0.4:
                parts.append(rng.choice(_CJK_WORDS))
            else:
                parts.append("".join(rng.choices(_CHARS, k=rng.randint(1, 3))))
        return "".join(parts) + "。"

    def message(self, rng: random.Random, g: int) -> dict[str, Any]:
        """The ``g``-th message of a stream (``g`` decides what is planted)."""
        plants = []
        if g % 3 == 0:
            plants.append(
                rng.choice(
                    (
                        f"The {COMMON} failed halfway.",
                        f"Run the {COMMON}s again.",
                        f"{COMMON.capitalize()} 0012 applied.",
                    )
                )
            )
        if g % RARE_EVERY == RARE_AT:
            plants.append(f"The {RARE} flag was set.")
        if g % 500 == 7:
            plants.append(f"Error: {' '.join(PHRASE)} on port 5432.")
        if g % 200 == 3:
            plants.append(f"We should {rng.choice(PREFIX_WORDS)} this.")
        sentences = self.sentences
        kind = rng.random()
        if plants and 0.40 <= kind < 0.97:
            kind = rng.random() * 0.40  # planted terms go into plain text
        role = "user" if g % 2 else "assistant"
        if kind < 0.30:
            count = rng.randint(1, 6)
            text = " ".join(rng.choice(sentences) for _ in range(count))
            return {"role": role, "content": " ".join([text, *plants])}
        if kind < 0.40:
            ident, path = rng.choice(self.idents), rng.choice(self.paths)
            name = rng.choice(self.idents)
            text = (
                f"I changed `{ident}` in {path}:\n```python\ndef {name}(self, value):\n"
                f"    return self.{rng.choice(self.idents)}(value)\n```\n"
                f"{rng.choice(sentences)} {' '.join(plants)}"
            )
            return {"role": "assistant", "content": text}
        if kind < 0.55:
            arguments = {"path": rng.choice(self.paths), "pattern": rng.choice(self.idents)}
            return {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": f"call_{g}",
                        "type": "function",
                        "function": {
                            "name": rng.choice(_TOOLS),
                            "arguments": json.dumps(arguments),
                        },
                    }
                ],
            }
        if kind < 0.70:
            path = rng.choice(self.paths)
            lines = [
                f'  File "{path}", line {rng.randint(1, 900)}, in {rng.choice(self.idents)}',
                f"{rng.choice(self.idents)}: {rng.choice(sentences)}",
                f"FAILED tests/test_{rng.choice(self.words[:300])}.py - {rng.choice(sentences)}",
            ]
            return {"role": "tool", "tool_call_id": f"call_{g - 1}", "content": "\n".join(lines)}
        if kind < 0.80:
            text = " ".join(rng.choice(sentences) for _ in range(rng.randint(1, 4)))
            return {"role": "user", "content": [{"type": "text", "text": text}]}
        if kind < 0.83:
            text = "".join(rng.choice(self.cjk) for _ in range(rng.randint(1, 3)))
            if rng.random() < 0.33:
                text = CJK_WORD + text
            return {"role": role, "content": text}
        count = rng.randint(1, 3)
        text = " ".join(rng.choice(sentences) for _ in range(count))
        plain = " ".join([text, f"See {rng.choice(self.paths)}.", *plants])
        return {"role": role, "content": plain}

    def messages(self, first: int, count: int) -> Iterator[dict[str, Any]]:
        """``count`` messages, the same for the same arguments (what the write figures of
        both libraries are timed with)."""
        rng = random.Random(f"{SEED}:{first}")
        for g in range(first, first + count):
            yield self.message(rng, g)

    def write_store(self, path: Path, total: int) -> Plan:
        """An ``export_store`` stream of about ``total`` stored messages (it ends with the
        session that reaches it)."""
        rng = random.Random(SEED * 7)
        plan = Plan()
        start = datetime(2026, 1, 1, tzinfo=UTC)
        roots: list[tuple[str, int, str]] = []  # (stream id, messages, name) of recent roots
        best_branch = 0
        g = 0
        dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
        with open(path, "w", encoding="utf-8") as fh:
            fh.write('{"coda_session":2,"kind":"store"}\n')
            while g < total:
                n = plan.sessions
                sid = str(uuid.UUID(int=rng.getrandbits(128)))
                name = f"s{n:06d}"
                created = start + timedelta(minutes=7 * n)
                meta: dict[str, Any] = {
                    "project": f"proj-{n % 100}",
                    "owner": {"team": _TEAMS[n % len(_TEAMS)]},
                    "tags": [t for t in _TAGS if rng.random() < 0.15],
                }
                head: dict[str, Any] = {
                    "coda_session": 2,
                    "kind": "session",
                    "escaped_strings": True,
                    "id": sid,
                    "name": name,
                    "created_at": created.isoformat(),
                    "updated_at": created.isoformat(),
                    "metadata": meta,
                }
                shown = 0
                if roots and rng.random() < 0.10:
                    parent, parent_count, _ = rng.choice(roots[-50:])
                    shares = rng.randint(1, parent_count)
                    head.update(parent_id=parent, fork_point=shares, shares=shares)
                    own = rng.randint(20, 200)
                    shown = shares
                    plan.branches += 1
                    if shares + own > best_branch:
                        best_branch, plan.probe_branch = shares + own, name
                else:
                    own = rng.randint(50, 500)
                    roots.append((sid, own, name))
                    if not plan.probe_root or (g < total // 2 and abs(own - 500) < 5 and own > 400):
                        plan.probe_root = name
                own = min(own, max(1, total - g))
                fh.write(dumps(head) + "\n")
                stamp = created.timestamp()
                lines = []
                for k in range(own):
                    msg = self.message(rng, g)
                    g += 1
                    msg["timestamp"] = datetime.fromtimestamp(
                        stamp + 17 * (shown + k), UTC
                    ).isoformat()
                    lines.append(dumps(msg))
                fh.write("\n".join(lines) + "\n")
                fh.write(f'{{"coda_session":2,"kind":"end","message_count":{own}}}\n')
                plan.sessions += 1
                plan.messages += own
        plan.bytes = path.stat().st_size
        plan.planted = {
            RARE: len(range(RARE_AT, g, RARE_EVERY)),
            COMMON: len(range(0, g, 3)),
            " ".join(PHRASE): len(range(7, g, 500)),
            PREFIX: len(range(3, g, 200)),
        }
        return plan


# -- the libraries: ours and the baseline, each in a child process ---------------------------


def _worker_main() -> None:
    """A child's loop: one JSON command per stdin line, one JSON answer per stdout line.
    It imports the ``coda_session`` its ``PYTHONPATH`` names (ours or the baseline)."""
    import coda_session
    from coda_session import AsyncSessionManager
    from coda_session.manager import repository_of

    corpus: Corpus | None = None
    managers: dict[str, AsyncSessionManager] = {}
    sessions: dict[tuple[str, str], Any] = {}

    async def manager(config: dict[str, Any]) -> AsyncSessionManager:
        key = json.dumps(config, sort_keys=True)
        if key not in managers:
            am = AsyncSessionManager(config)
            await am.open()
            managers[key] = am
        return managers[key]

    async def handle(cmd: dict[str, Any]) -> Any:
        nonlocal corpus
        op = cmd["op"]
        if op == "where":
            return str(Path(coda_session.__file__).parent)
        if op == "import":
            am = await manager(cmd["config"])
            t0 = time.perf_counter()
            names = await am.import_store(cmd["path"])
            took = time.perf_counter() - t0
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            return {"seconds": took, "sessions": len(names), "peak_mb": peak}
        if corpus is None:
            corpus = Corpus()
        am = await manager(cmd["config"])
        batch = list(corpus.messages(cmd["first"], cmd["n"]))
        if op == "appends":
            key = (json.dumps(cmd["config"], sort_keys=True), "appends")
            if key not in sessions:
                sessions[key] = await am.create_session("appends")
            sess = sessions[key]
            out = []
            for msg in batch:
                t0 = time.perf_counter()
                sess.add_message(msg)
                await am.save_session(sess)
                out.append(time.perf_counter() - t0)
            return out
        if op == "bulk":
            sess = await am.create_session(cmd["name"])
            t0 = time.perf_counter()
            for msg in batch:
                sess.add_message(msg)
            t1 = time.perf_counter()
            await am.save_session(sess)
            t2 = time.perf_counter()
            # ours writes the index in the background after the save (index_in_background):
            # until its entries are written too; the baseline has no index to wait for
            settle = getattr(repository_of(am), "settle_search_index", None)
            if settle is not None:
                await settle()
            t3 = time.perf_counter()
            return {"total": t2 - t0, "save": t2 - t1, "indexed": t3 - t0}
        raise ValueError(f"unknown command {op!r}")

    async def loop() -> None:
        try:
            for line in sys.stdin:
                cmd = json.loads(line)
                if cmd["op"] == "close":
                    break
                try:
                    answer = {"ok": await handle(cmd)}
                except Exception as exc:  # reported to the parent, which raises
                    answer = {"error": f"{type(exc).__name__}: {exc}"}
                print(json.dumps(answer), flush=True)
        finally:
            for am in managers.values():
                await am.close()

    asyncio.run(loop())


class Library:
    """One child process running one library (ours or the baseline)."""

    def __init__(self, label: str, root: Path) -> None:
        self.label, self.root = label, root
        env = dict(os.environ, PYTHONPATH=str(root))
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        where = Path(self.call({"op": "where"}))
        assert where == root / "coda_session", f"{label}: imported {where}, not {root}"

    def call(self, cmd: dict[str, Any]) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.label}: the worker died (exit {self.proc.wait()})")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"{self.label}: {answer['error']}")
        return answer["ok"]

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write('{"op": "close"}\n')
            self.proc.stdin.flush()
            self.proc.wait(timeout=120)


def import_once(root: Path, label: str, config: dict[str, Any], path: Path) -> dict[str, Any]:
    """``import_store(path)`` in a fresh child (so its peak RSS is the import's own)."""
    lib = Library(label, root)
    try:
        result: dict[str, Any] = lib.call({"op": "import", "config": config, "path": str(path)})
        return result
    finally:
        lib.close()


OURS = Path(__file__).resolve().parents[1]


def baseline_root(spec: str | None, work: Path) -> tuple[Path | None, str]:
    """The baseline library's directory (holding ``coda_session`` and ``migrations``) and
    what it is, or None and why there is none. ``spec``: a directory, or a git ref of this
    repository (extracted with ``git archive``); None: the tag ``issue18-base`` if present."""
    if spec is not None and Path(spec).is_dir():
        root = Path(spec).resolve()
        if not (root / "coda_session").is_dir():
            return None, f"{root} holds no coda_session package"
        return root, str(root)
    ref = spec or "issue18-base"
    found = subprocess.run(
        ["git", "-C", str(OURS), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
        capture_output=True,
        text=True,
    )
    if found.returncode != 0:
        return None, f"no git ref {ref!r} in {OURS} (pass --baseline REF or DIR)"
    commit = found.stdout.strip()
    root = work / "baseline"
    root.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(OURS), "archive", "--format=tar", commit, "coda_session", "migrations"],
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive.stdout, check=True)
    return root, f"{ref} ({commit[:12]})"


# -- the run --------------------------------------------------------------------------------


@dataclass
class Store:
    """One generated store, loaded into each backend."""

    size: int
    plan: Plan
    export: Path
    sqlite: Path | None = None  # the directory of ours
    postgres: str | None = None  # the database of ours


@dataclass
class Run:
    sizes: Sizes
    work: Path
    table: Table
    backends: tuple[str, ...]
    server: Server | None
    baseline: Path | None
    baseline_why: str
    corpus: Corpus
    jit_off: bool = False  # PostgreSQL: ALTER DATABASE ... SET jit = off on this run's
    stores: list[Store] = field(default_factory=list)

    def sqlite_config(self, where: str) -> dict[str, Any]:
        return {"session": {"storage_path": str(self.work / where)}}

    async def config(self, backend: str, where: str) -> tuple[dict[str, Any], str]:
        """A fresh store's configuration on ``backend``, and its directory or database."""
        if backend == "sqlite":
            return self.sqlite_config(where), where
        assert self.server is not None
        database = await self.server.create(where.replace("-", "_"))
        if self.jit_off:
            await self.server.admin(f'ALTER DATABASE "{database}" SET jit = off')
        return self.server.library_config(database), database


def _seconds(value: float) -> str:
    return f"{value:,.1f} s"


# -- 1. building the stores -------------------------------------------------------------------


async def build_stores(run: Run) -> None:
    """Generate each store's export and import it: ours (kept for part 2) and the
    baseline's (timed, then dropped), in alternating order."""
    table = run.table
    for index, size in enumerate(run.sizes.stores):
        export = run.work / f"store-{size}.jsonl"
        t0 = time.perf_counter()
        plan = run.corpus.write_store(export, size)
        table.notes.append(
            f"note 1: generated the {plan.messages:,}-message export in "
            f"{time.perf_counter() - t0:.1f} s: {plan.sessions:,} sessions ({plan.branches:,} "
            f"branches), {plan.bytes / 1e6:,.0f} MB; planted: "
            + ", ".join(f"{term!r} in {n:,}" for term, n in plan.planted.items())
        )
        store = Store(size, plan, export)
        run.stores.append(store)
        for backend in run.backends:
            contenders: list[tuple[str, Path]] = [("ours", OURS)]
            if run.baseline is not None and (
                backend == "sqlite" or size <= run.sizes.pg_baseline_import
            ):
                contenders.append(("baseline", run.baseline))
            got: dict[str, dict[str, Any]] = {}
            for label, root in rotate(contenders, index):
                config, where = await run.config(backend, f"{label}-{size}")
                got[label] = await asyncio.to_thread(import_once, root, label, config, export)
                if label == "ours":
                    if backend == "sqlite":
                        store.sqlite = run.work / where
                    else:
                        store.postgres = where
                elif backend == "sqlite":
                    shutil.rmtree(run.work / where)  # the disk holds one big store at a time
                else:
                    assert run.server is not None
                    await run.server.drop(where)
            mine = got["ours"]
            assert mine["sessions"] == plan.sessions, (mine, plan.sessions)
            rate = (
                f"{plan.messages / mine['seconds']:,.0f} msgs/s, peak RSS {mine['peak_mb']:.0f} MB"
            )
            base = got.get("baseline")
            cells = [
                "1",
                backend,
                f"import_store of a {plan.messages:,}-message export ({rate})",
                _seconds(mine["seconds"]),
            ]
            if base is not None:
                ratio = mine["seconds"] / base["seconds"]
                cells += [_seconds(base["seconds"]), f"{ratio:.2f}x", "report"]
                table.notes.append(
                    f"note 1: {backend} {plan.messages:,}: the baseline imported at "
                    f"{plan.messages / base['seconds']:,.0f} msgs/s, peak RSS "
                    f"{base['peak_mb']:.0f} MB"
                )
            table.add(*cells)


# -- 2. search ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    key: str
    label: str
    query: str
    like: str | None  # the LIKE pattern of the scan it replaces (None: no such scan)
    target: float | None  # seconds, at the largest store
    scope: str = ""  # "root" or "branch": search inside that probe session
    options: tuple[tuple[str, Any], ...] = ()


PROBES = (
    Probe("rare", f"rare term ({RARE}), top-20 ranked, snippets", RARE, f"%{RARE}%", 0.002),
    Probe("common", f"term in a third of all rows ({COMMON})", COMMON, f"%{COMMON}%", 0.050),
    Probe(
        "session",
        f"one session (~500 msgs) of the store: {COMMON}",
        COMMON,
        f"%{COMMON}%",
        0.010,
        scope="root",
    ),
    Probe(
        "branch",
        f"one branch (shared history included): {COMMON}",
        COMMON,
        None,
        0.010,
        scope="branch",
    ),
    Probe(
        "phrase",
        f'phrase "{" ".join(PHRASE)}"',
        f'"{" ".join(PHRASE)}"',
        f"%{' '.join(PHRASE)}%",
        0.020,
    ),
    Probe("prefix", f"prefix {PREFIX}*", f"{PREFIX}*", f"%{PREFIX}%", 0.020),
    Probe("cjk", f"Chinese word {CJK_WORD} (bigrams)", CJK_WORD, f"%{CJK_WORD}%", None),
    Probe(
        "newest",
        f"{COMMON}, order='newest'",
        COMMON,
        f"%{COMMON}%",
        None,
        options=(("order", "newest"),),
    ),
    Probe(
        "tagged",
        f"{COMMON}, tags='client-x' (sessions resolved by the filter)",
        COMMON,
        None,
        None,
        options=(("tags", "client-x"),),
    ),
)

LIKE_SQLITE = (
    "SELECT id, session_id, role, content FROM messages WHERE content LIKE ? "
    f"ORDER BY id DESC LIMIT {PAGE}"
)
LIKE_SQLITE_SESSION = (
    "SELECT id, session_id, role, content FROM messages WHERE session_id = ? AND content LIKE ? "
    f"ORDER BY id DESC LIMIT {PAGE}"
)
LIKE_PG = (
    "SELECT id, session_id, role, content FROM messages WHERE content ILIKE $1 "
    f"ORDER BY id DESC LIMIT {PAGE}"
)
LIKE_PG_SESSION = (
    "SELECT id, session_id, role, content FROM messages WHERE session_id = $1 "
    f"AND content ILIKE $2 ORDER BY id DESC LIMIT {PAGE}"
)


class Scan:
    """The LIKE scans, raw, on the same database as ours."""

    def __init__(self) -> None:
        self.sqlite: sqlite3.Connection | None = None
        self.pg: Any = None

    async def session_id(self, name: str) -> str:
        sql = "SELECT id FROM sessions WHERE name = "
        if self.sqlite is not None:
            return str(self.sqlite.execute(sql + "?", (name,)).fetchone()[0])
        return str(await self.pg.fetchval(sql + "$1", name))

    async def run(self, pattern: str, session_id: str | None) -> int:
        if self.sqlite is not None:
            if session_id is None:
                rows = self.sqlite.execute(LIKE_SQLITE, (pattern,)).fetchall()
            else:
                rows = self.sqlite.execute(LIKE_SQLITE_SESSION, (session_id, pattern)).fetchall()
            return len(rows)
        if session_id is None:
            return len(await self.pg.fetch(LIKE_PG, pattern))
        return len(await self.pg.fetch(LIKE_PG_SESSION, session_id, pattern))


async def bench_search(run: Run, backend: str, store: Store) -> None:
    from coda_session import AsyncSessionManager

    table, plan = run.table, store.plan
    scan = Scan()
    if backend == "sqlite":
        assert store.sqlite is not None
        config = {"session": {"storage_path": str(store.sqlite)}}
        scan.sqlite = sqlite3.connect(store.sqlite / "sessions.db", check_same_thread=False)
    else:
        assert run.server is not None and store.postgres is not None
        config = run.server.library_config(store.postgres)
        scan.pg = await run.server.connect(store.postgres)
    largest = store.size >= 1_000_000  # the targets are for a 1M-message store
    try:
        async with AsyncSessionManager(config) as am:
            searchable = hasattr(am, "search")
            if not searchable:
                table.notes.append(
                    "note 2: this checkout has no manager.search: only the LIKE scans ran"
                )
            scoped = {
                "root": await scan.session_id(plan.probe_root),
                "branch": await scan.session_id(plan.probe_branch),
            }
            found: dict[tuple[str, str], Any] = {}

            async def one(key: tuple[str, str]) -> float:
                who, name = key
                probe = next(p for p in PROBES if p.key == name)
                if who == "like":
                    assert probe.like is not None
                    sid = scoped[probe.scope] if probe.scope else None
                    t0 = time.perf_counter()
                    hits = await scan.run(probe.like, sid)
                    took = time.perf_counter() - t0
                    found[key] = hits
                    return took
                options = dict(probe.options)
                if probe.scope:
                    options["session"] = (
                        plan.probe_root if probe.scope == "root" else (plan.probe_branch)
                    )
                t0 = time.perf_counter()
                result = await am.search(probe.query, limit=PAGE, **options)
                took = time.perf_counter() - t0
                found[key] = result
                return took

            keys = [("like", p.key) for p in PROBES if p.like is not None]
            if searchable:
                keys += [("ours", p.key) for p in PROBES]
            times = await interleaved(one, keys, run.sizes.search_repeats)
    finally:
        if scan.sqlite is not None:
            scan.sqlite.close()
        if scan.pg is not None:
            await scan.pg.close()

    size = f"{plan.messages // 1000:,}k"
    for probe in PROBES:
        like = median(times[("like", probe.key)]) if probe.like is not None else None
        mine = median(times[("ours", probe.key)]) if searchable else None
        cells = ["2", backend, f"{size}: {probe.label}"]
        cells.append(ms(mine) if mine is not None else "-")
        cells.append(ms(like) + " LIKE" if like is not None else "")
        cells.append(f"{mine / like:.3f}x" if mine is not None and like is not None else "")
        if probe.target is not None and mine is not None:
            cells.append(f"< {probe.target * 1e3:g} ms" + ("" if largest else " at 1M"))
            cells.append(verdict(mine < probe.target))
        table.add(*cells)
        if searchable:
            result = found[("ours", probe.key)]
            exact = "" if result.total_exact else "at least "
            window = f", ranked the newest {result.window:,}" if result.window else ""
            table.notes.append(
                f"note 2: {backend} {size} {probe.key}: {len(result.hits)} hits shown of "
                f"{exact}{result.total:,}{window}"
                + (f"; LIKE returned {found[('like', probe.key)]}" if probe.like else "")
            )
    if searchable:
        rare = found[("ours", "rare")]
        assert len(rare.hits) == min(PAGE, plan.planted[RARE]), (len(rare.hits), plan.planted)
    assert found[("like", "rare")] == min(PAGE, plan.planted[RARE])


# -- 3. filtered list_sessions --------------------------------------------------------------------


def listing_rows(count: int) -> Iterator[tuple[str, str, datetime, dict[str, Any]]]:
    """(id, name, created_at, metadata) of the listing store's sessions: the project (one
    of 100, so a filter on it keeps 1%), a nested team, a priority, tags (``client-x`` on
    one session in 20)."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for n in range(count):
        tags = ["client-x"] if n % 20 == 7 else []
        tags.append(_TAGS[1 + (n * 7) % (len(_TAGS) - 1)])
        meta = {
            "project": f"proj-{n % 100}",
            "owner": {"team": _TEAMS[n % len(_TEAMS)]},
            "priority": n % 5,
            "tags": tags,
        }
        yield str(uuid.UUID(int=n + 1)), f"chat-{n:06d}", start + timedelta(seconds=30 * n), meta


INSERT_SESSION_SQLITE = (
    "INSERT INTO sessions (id, name, created_at, updated_at, metadata, root_id) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
INSERT_SESSION_PG = (
    "INSERT INTO sessions (id, name, created_at, updated_at, metadata, root_id) "
    "VALUES ($1, $2, $3, $4, $5, $6)"
)


async def fill_listing(run: Run, backend: str, config: dict[str, Any], where: str) -> None:
    """The listing store's sessions, written by raw inserts into the schema the library made
    (its triggers keep its filter tables), as ``postgres.py`` part 4 copies sessions: an
    import would commit each session on its own, minutes for 100,000. Checked through the
    library afterwards."""
    from coda_session import AsyncSessionManager
    from coda_session.codec import dumps_metadata
    from coda_session.timeutil import to_sqlite_timestamp

    count = run.sizes.list_sessions
    async with AsyncSessionManager(config) as am:
        await am.open()
    rows = listing_rows(count)
    if backend == "sqlite":
        conn = sqlite3.connect(run.work / where / "sessions.db", isolation_level=None)
        try:
            conn.execute("BEGIN")
            conn.executemany(
                INSERT_SESSION_SQLITE,
                (
                    (
                        sid,
                        name,
                        to_sqlite_timestamp(at),
                        to_sqlite_timestamp(at),
                        dumps_metadata(meta),
                        sid,
                    )
                    for sid, name, at, meta in rows
                ),
            )
            conn.execute("COMMIT")
            conn.execute("ANALYZE")
        finally:
            conn.close()
    else:
        assert run.server is not None
        pg = await run.server.connect(where)
        try:
            # the inserts are setup, not timed: JIT compiling the metadata trigger's
            # statement for each row would make them take minutes
            await pg.execute("SET jit = off")
            async with pg.transaction():
                await pg.executemany(
                    INSERT_SESSION_PG,
                    [
                        (sid, name, at, at, dumps_metadata(meta), sid)
                        for sid, name, at, meta in rows
                    ],
                )
            await pg.execute("ANALYZE")
        finally:
            await pg.close()
    async with AsyncSessionManager(config) as am:
        listed = await am.list_sessions()
        assert len(listed) == count, (len(listed), count)
        _, name, at, meta = next(listing_rows(count))
        assert (listed[0].name, listed[0].created_at, listed[0].metadata) == (name, at, meta)


@dataclass(frozen=True)
class Listing:
    key: str
    label: str
    options: tuple[tuple[str, Any], ...]
    keep: Any  # the Python filter of the baseline: SessionInfo -> bool


LISTINGS = (
    Listing(
        "meta",
        "metadata={'project': 'proj-42'} (1%)",
        (("metadata", {"project": "proj-42"}),),
        lambda s: s.metadata.get("project") == "proj-42",
    ),
    Listing(
        "nested",
        "metadata={'owner': {'team': 'ml'}} (nested, 1/7)",
        (("metadata", {"owner": {"team": "ml"}}),),
        lambda s: (s.metadata.get("owner") or {}).get("team") == "ml",
    ),
    Listing(
        "tag",
        "tags=['client-x'] (5%)",
        (("tags", ["client-x"]),),
        lambda s: "client-x" in (s.metadata.get("tags") or ()),
    ),
)


async def bench_listing(run: Run, backend: str) -> None:
    from coda_session import AsyncSessionManager

    table, count = run.table, run.sizes.list_sessions
    config, where = await run.config(backend, f"listing-{count}")
    t0 = time.perf_counter()
    await fill_listing(run, backend, config, where)
    table.notes.append(
        f"note 3: {backend}: wrote and checked the {count:,} sessions in "
        f"{time.perf_counter() - t0:.1f} s"
    )
    async with AsyncSessionManager(config) as am:
        filtering = "metadata" in inspect.signature(am.list_sessions).parameters
        if not filtering:
            table.notes.append("note 3: this checkout's list_sessions takes no filter")
        deep: dict[str, tuple[str | None, int]] = {}  # cursor of a page deep in, its offset
        if filtering:
            for listing in LISTINGS:
                matches = sum(1 for s in await am.list_sessions() if listing.keep(s))
                pages = matches // PAGE // 2  # the middle of the matches
                cursor = None
                for _ in range(pages):
                    page = await am.list_sessions(
                        limit=PAGE, cursor=cursor, **dict(listing.options)
                    )
                    cursor = page.next_cursor
                deep[listing.key] = (cursor, pages * PAGE)

        async def one(key: tuple[str, str, str]) -> float:
            who, name, where_in = key
            listing = next(x for x in LISTINGS if x.key == name)
            offset = deep[name][1] if where_in == "deep" and who == "ours" else 0
            if who == "python":
                offset = deep.get(name, (None, 0))[1] if where_in == "deep" else 0
                t0 = time.perf_counter()
                got = [s for s in await am.list_sessions() if listing.keep(s)]
                page = got[offset : offset + PAGE]
                took = time.perf_counter() - t0
                assert len(page) == PAGE
                return took
            cursor = deep[name][0] if where_in == "deep" else None
            t0 = time.perf_counter()
            listed = await am.list_sessions(limit=PAGE, cursor=cursor, **dict(listing.options))
            took = time.perf_counter() - t0
            assert len(listed) == PAGE and all(listing.keep(s) for s in listed)
            return took

        keys = [("python", x.key, "first") for x in LISTINGS]
        if filtering:
            keys += [("ours", x.key, at) for x in LISTINGS for at in ("first", "deep")]
        times = await interleaved(one, keys, run.sizes.list_repeats)
    for listing in LISTINGS:
        base = median(times[("python", listing.key, "first")])
        table.add(
            "3",
            backend,
            f"{count // 1000:,}k sessions: list_sessions() + Python filter, {listing.label}",
            "",
            ms(base),
        )
        if not filtering:
            continue
        for at in ("first", "deep"):
            mine = median(times[("ours", listing.key, at)])
            what = "first page" if at == "first" else f"page at {deep[listing.key][1]:,} (cursor)"
            table.add(
                "3",
                backend,
                f"  list_sessions({listing.key}, limit={PAGE}): {what}",
                ms(mine),
                ms(base),
                f"{mine / base:.3f}x",
                "< 10 ms",
                verdict(mine < 0.010),
            )


# -- 4. what the index costs the writes ------------------------------------------------------------


async def bench_writes(run: Run, backend: str) -> None:
    """Durable single-message saves and one big save, ours against the baseline, each
    library in its own child on a store of its own, in alternating rounds (ABAB) with the
    same messages."""
    table, sizes = run.table, run.sizes
    if run.baseline is None:
        table.add("4", backend, f"skipped: no baseline ({run.baseline_why})")
        return
    libs = {"ours": Library("ours", OURS), "baseline": Library("baseline", run.baseline)}
    try:
        configs = {label: (await run.config(backend, f"writes-{label}"))[0] for label in libs}
        labels = tuple(libs)
        appends: dict[str, list[float]] = {label: [] for label in labels}
        per_round = sizes.append_ops // sizes.append_rounds
        first = 0
        for label in labels:  # warm up: the store made, the first statements compiled
            libs[label].call({"op": "appends", "config": configs[label], "first": 0, "n": 20})
        for r in range(sizes.append_rounds):
            first += per_round
            for label in rotate(labels, r):
                cmd = {"op": "appends", "config": configs[label], "first": first, "n": per_round}
                appends[label] += await asyncio.to_thread(libs[label].call, cmd)
        bulks: dict[str, list[dict[str, float]]] = {label: [] for label in labels}
        for r in range(sizes.bulk_repeats):
            for label in rotate(labels, r):
                cmd = {
                    "op": "bulk",
                    "config": configs[label],
                    "first": 10_000_000 * (r + 1),
                    "n": sizes.bulk_messages,
                    "name": f"bulk-{r}",
                }
                bulks[label].append(await asyncio.to_thread(libs[label].call, cmd))
    finally:
        for lib in libs.values():
            lib.close()

    n = per_round * sizes.append_rounds
    mine, base = median(appends["ours"]), median(appends["baseline"])
    table.add(
        "4",
        backend,
        f"durable save x{n}: add_message + save_session, one message each",
        f"{mine * 1e6:,.0f} µs",
        f"{base * 1e6:,.0f} µs",
        f"{mine / base:.2f}x",
        "<= 1.30x",
        verdict(mine / base <= 1.30),
    )
    for what, label in (
        ("total", "from the first add_message"),
        ("indexed", "until its index entries are written too (ours: in the background)"),
        ("save", "save_session alone"),
    ):
        mine = median([b[what] for b in bulks["ours"]])
        base = median([b[what] for b in bulks["baseline"]])
        table.add(
            "4",
            backend,
            f"{sizes.bulk_messages:,}-message save x{sizes.bulk_repeats}, {label} "
            f"({per_s(sizes.bulk_messages, mine)})",
            ms(mine),
            ms(base),
            f"{mine / base:.2f}x",
            *(("<= 1.50x", verdict(mine / base <= 1.50)) if what == "total" else ()),
        )


# -- main -------------------------------------------------------------------------------------------


async def run_all(run: Run, parts: set[str]) -> None:
    if {"1", "2"} & parts:
        with section("1. building the stores (import_store of generated exports)"):
            await build_stores(run)
    if "2" in parts:
        for store in run.stores:
            for backend in run.backends:
                with section(f"2. search, {backend}, {store.plan.messages:,} messages"):
                    await bench_search(run, backend, store)
    if "3" in parts:
        for backend in run.backends:
            with section(f"3. filtered list_sessions, {backend}"):
                await bench_listing(run, backend)
    if "4" in parts:
        for backend in run.backends:
            with section(f"4. what the index costs the writes, {backend}"):
                await bench_writes(run, backend)


async def server_jit(server: Server) -> str:
    conn = await server.connect()
    try:
        return str(await conn.fetchval("SHOW jit"))
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> int:
    if argv is None and sys.argv[1:] == ["--worker"]:
        _worker_main()
        return 0
    parser = arguments(__doc__, ("1", "2", "3", "4"))
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), action="append")
    parser.add_argument(
        "--baseline",
        help="the library without the index, for the import and write figures: a git ref of "
        "this repository or a directory holding coda_session and migrations (default: the "
        "tag issue18-base)",
    )
    parser.add_argument(
        "--stores",
        type=int,
        nargs="+",
        metavar="N",
        help="messages of each generated store (default: 200,000 and 1,000,000; quick 10,000)",
    )
    parser.add_argument(
        "--postgres-jit-off",
        action="store_true",
        help="ALTER DATABASE ... SET jit = off on this run's PostgreSQL databases",
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.stores:
        sizes = dataclasses.replace(sizes, stores=tuple(args.stores))
    parts = set(args.only or "1234")
    wanted = tuple(args.backend or ("sqlite", "postgresql"))
    url = postgres_url() if "postgresql" in wanted else None
    backends = tuple(b for b in wanted if b == "sqlite" or url is not None)

    print(environment("SQLAlchemy", "aiosqlite", "coda-session", sqlite=True))
    print(mode(args.quick, "medians of perf_counter timings; ratio = ours / baseline time"))
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="coda-bench-search-"))
    server = Server(url) if url is not None else None
    table = Table(TABLE_HEAD, left=3, shown=(3, 4, 5))
    try:
        baseline, why = baseline_root(args.baseline, work)
        print(f"baseline (no index): {why}")
        if server is not None:
            found, durability = asyncio.run(server.version())
            jit = asyncio.run(server_jit(server))
            jit = "jit=off here (--postgres-jit-off)" if args.postgres_jit_off else f"jit={jit}"
            print(f"PostgreSQL {found} ({durability}; {jit})")
        run = Run(sizes, work, table, backends, server, baseline, why, Corpus())
        run.jit_off = args.postgres_jit_off
        try:
            asyncio.run(run_all(run, parts))
        finally:
            if server is not None:
                asyncio.run(server.drop_all())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    table.print()
    print(f"\ntotal {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
