"""The search corpus of issue 18: realistic conversations and the hits each query must give.

Data only (``tests/test_search_corpus.py`` loads it on every backend and checks it). The
corpus is a script of steps run in order on an empty store: sessions created with their
messages (some branched from others), then truncated, popped, cleared or deleted, so the
store holds shared history, a branch whose source is gone and messages no session shows
any more.

Every message has a key (``"mig.2"``: its conversation and its index there) and a
timestamp unique in the corpus, which is how a hit is mapped back to its key (a timestamp
is not searchable text, and the steps run in timestamp order, so the newest message has
the largest id too). The expected hit sets were computed by hand from the grammar and
analysis rules of the design (docs: README "Search"): a word is a run of letters, digits
and marks, split at camelCase boundaries and at punctuation, case-folded, with a light
plural stemmer (``locks`` -> ``lock``, ``queries`` -> ``query``, but ``locked`` stays);
CJK runs give overlapping bigrams; every non-ASCII symbol (emoji, ``␛``) is a term; a lone
surrogate is a term of its own; the values under ``type``/``id``/``call_id``/
``tool_call_id`` and everything under ``metadata`` are not text; dict keys are not text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

__all__ = [
    "ADVERSARIAL",
    "ALL",
    "CORPUS",
    "QUERIES",
    "Case",
    "Conversation",
    "Step",
]


@dataclass(frozen=True)
class Conversation:
    """A session created (or branched) with these messages, on this day."""

    name: str
    day: str
    messages: tuple[tuple[str, dict[str, Any]], ...]
    metadata: dict[str, Any] = field(default_factory=dict)
    branch_from: str | None = None
    fork_point: int | None = None


@dataclass(frozen=True)
class Step:
    """An operation on a stored session: ``truncate`` (keep the newest ``n``), ``pop``
    (the newest ``n``), ``clear`` or ``delete``."""

    op: str
    name: str
    n: int = 0


def _ts(day: str, i: int) -> str:
    return f"{day}T09:{i:02d}:00+00:00"


def _conv(
    name: str,
    key: str,
    day: str,
    messages: list[dict[str, Any]],
    *,
    metadata: dict[str, Any] | None = None,
    branch_from: str | None = None,
    fork_point: int | None = None,
) -> Conversation:
    stamped = tuple((f"{key}.{i}", {**m, "timestamp": _ts(day, i)}) for i, m in enumerate(messages))
    return Conversation(name, day, stamped, metadata or {}, branch_from, fork_point)


def _u(text: Any) -> dict[str, Any]:
    return {"role": "user", "content": text}


def _a(text: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


PROFILE_LINES = "\n".join(
    f"frame {i:03d}: handler_loop spent {12 + i % 7} ms in json.loads of payload {i}"
    for i in range(60)
)
"""The long tool output of ``perf.1`` (about 4 KB: stored compressed)."""

LONG_WORD = "x" * 150
"""A word longer than the 100 characters a term keeps."""

CORPUS: tuple[Conversation | Step, ...] = (
    # -- the session where the agent fixed the migration bug (tool calls, a traceback)
    _conv(
        "migration-bug",
        "mig",
        "2026-01-05",
        [
            _u(
                "The migration that adds the sessions.root_id column fails on the production "
                "copy. Can you find the bug?"
            ),
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_Zx9q",
                        "type": "function",
                        "function": {
                            "name": "run_shell",
                            "arguments": '{"cmd": "alembic upgrade head", "cwd": "src/app"}',
                        },
                    }
                ],
            },
            {
                "role": "tool",
                "tool_call_id": "call_Zx9q",
                "name": "run_shell",
                "content": (
                    "Traceback (most recent call last):\n"
                    '  File "src/app/main.py", line 42, in <module>\n'
                    "    upgrade()\n"
                    "sqlite3.OperationalError: database is locked"
                ),
            },
            _a(
                "The upgrade holds a write transaction open while get_items() reads through "
                "a second connection, so SQLite reports `database is locked`. I will move "
                "the read into the same connection."
            ),
            _u("ok, also check the SessionManager cleanup"),
            _a(
                "Fixed: SessionManager.close() now waits for the migration lock. The "
                "migration bug is gone; all 312 tests pass."
            ),
        ],
        metadata={
            "topic": "migrations",
            "tags": ["client-x", "backend"],
            "project": {"name": "atlas", "tier": 1},
        },
    ),
    # -- a retry branched from it after the traceback: shares mig.0-2, then diverges
    _conv(
        "migration-bug-retry",
        "retry",
        "2026-01-06",
        [
            _a(
                "Instead of sharing the connection, retry the upgrade with a busy timeout of "
                "five seconds."
            ),
            _u("Retrying only hides the problem. Revert that."),
        ],
        branch_from="migration-bug",
        fork_point=3,
    ),
    # -- lint codes, paths, camelCase and snake_case, a structured message with an image
    _conv(
        "lint-cleanup",
        "lint",
        "2026-01-07",
        [
            _u("ruff reports E501 line too long in src/app/main.py and W291 trailing whitespace"),
            _a(
                "I wrapped the long lines, E501 is fixed. W291 remains in "
                "tests/test_items.py, next to the getItems helper."
            ),
            _u(
                [
                    {"type": "text", "text": "Here is the screenshot of the lint report"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "https://files.example.com/lint-report.png"},
                    },
                ]
            ),
            _a("The report lists three unused imports in get_items."),
        ],
        metadata={"topic": "lint", "tags": ["client-y"]},
    ),
    # -- network errors: an error code, an acronym in camelCase
    _conv(
        "network-errors",
        "net",
        "2026-01-08",
        [
            _u(
                "Chrome shows ERR_CONNECTION_REFUSED when the dashboard calls "
                "http://localhost:8080/api/items"
            ),
            _a(
                "The HTTPServer in devserver.py binds to 127.0.0.1 only; the container needs 0.0.0.0."
            ),
            _u("Now it says ERR_CONNECTION_RESET instead."),
            _a("A reset means the proxy closed it; check the proxy_read_timeout of nginx."),
        ],
        metadata={"topic": "networking", "tags": ["client-x", "frontend"]},
    ),
    # -- Chinese (会话 inside a sentence)
    _conv(
        "chinese-chat",
        "zh",
        "2026-01-09",
        [
            _u("我们的会话存储在迁移以后无法打开，请帮忙看看。"),  # noqa: RUF001
            _a("问题出在迁移脚本：它在事务中锁住了数据库。已修复。"),  # noqa: RUF001
        ],
        metadata={"lang": "zh", "tags": ["client-x", "i18n"]},
    ),
    # -- Japanese (katakana and kanji words) and one Korean line
    _conv(
        "japanese-chat",
        "ja",
        "2026-01-10",
        [
            _u("セッションを保存してから検索すると、古いメッセージが見つかりません。"),
            _a("インデックスを再構築してください。テストでは東京の会話も見つかりました。"),
            _u("감사합니다 세션 복구 완료"),
        ],
        metadata={"lang": "ja", "tags": ["i18n"]},
    ),
    # -- what the codec escapes (NUL, a lone surrogate, ␛), emoji, RTL, a very long word
    _conv(
        "escapes",
        "esc",
        "2026-01-11",
        [
            _u("log line with a NUL here\x00end of record"),
            _u("a lone surrogate \ud83d in the middle"),
            _a("the codec writes ␛ before what it escapes"),
            _u("Deploy finished 🚀 and the 🐛 is gone ✅"),
            _u("Arabic: مرحبا بالعالم and Hebrew: שלום עולם"),
            _u(f"token {LONG_WORD} ends here"),
            _a("<i>bold</i> & <script>alert(1)</script>"),
        ],
    ),
    # -- a long tool output (stored compressed) and a dict content
    _conv(
        "compressed-report",
        "perf",
        "2026-01-12",
        [
            _u("Please summarise the profiling report below."),
            {
                "role": "tool",
                "tool_call_id": "call_Prof1",
                "content": (
                    "profiling report\n"
                    + PROFILE_LINES
                    + "\nthe slowest call was zstandard_decompress_chunk in src/app/codec.py"
                ),
            },
            _a({"summary": "Most time goes to json.loads", "hot_paths": ["handler_loop"]}),
        ],
        metadata={"topic": "performance", "tags": ["client-x"]},
    ),
    # -- plural stemming
    _conv(
        "release-notes",
        "rel",
        "2026-01-13",
        [
            _u("Write release notes for 2.4: faster queries, fewer locks, the new search."),
            _a("Release 2.4 brings faster queries and a new full-text search across sessions."),
        ],
        metadata={"topic": "docs", "tags": ["client-x", "docs"]},
    ),
    # -- one clear relevance order
    _conv(
        "deadlock-analysis",
        "dl",
        "2026-01-14",
        [
            _u("deadlock deadlock deadlock in the worker pool"),
            _a(
                "Looking at the thread dump, the worker pool waits on the queue while the "
                "writer holds the index mutex; that ordering produces the deadlock when a "
                "flush arrives during a resize, because the resize first takes the queue "
                "guard, then asks every worker to drain its buffer, and each worker can "
                "only drain after it takes the index mutex again."
            ),
        ],
        metadata={"topic": "concurrency", "tags": ["backend"]},
    ),
    # -- a branch whose source is deleted afterwards (draft.2 is shown by nothing then)
    _conv(
        "draft-notes",
        "draft",
        "2026-01-15",
        [
            _u("Outline the onboarding guide for the quasar plugin"),
            _a("1. Install the quasar plugin and configure the pipeline 2. Run the smoke test"),
            _u("Add a section about the obsolete wombat exporter"),
        ],
        metadata={"topic": "docs", "tags": ["docs"]},
    ),
    _conv(
        "draft-notes-final",
        "final",
        "2026-01-16",
        [_a("Final draft: the quasar plugin guide is ready.")],
        branch_from="draft-notes",
        fork_point=2,
    ),
    Step("delete", "draft-notes"),
    # -- truncated: scratch.0-3 are no longer shown by anything
    _conv(
        "scratchpad",
        "scratch",
        "2026-01-17",
        [
            _u("brainstorm: marmalade cache warmer"),
            _u("brainstorm: marmalade eviction"),
            _u("brainstorm: nectarine sharding"),
            _u("brainstorm: nectarine rebalancing"),
            _a("decision: keep the marmalade cache warmer"),
            _a("decision: drop nectarine"),
        ],
    ),
    Step("truncate", "scratchpad", 2),
    # -- popped: pop.2 is gone
    _conv(
        "popped",
        "pop",
        "2026-01-18",
        [
            _u("question about the kiwifruit scheduler"),
            _a("answer: the kiwifruit scheduler runs hourly"),
            _u("follow-up: kiwifruit retries doubled"),
        ],
    ),
    Step("pop", "popped", 1),
    # -- cleared and deleted sessions: nothing of theirs is found
    _conv("cleared", "clr", "2026-01-19", [_u("papaya notes"), _a("papaya answer")]),
    Step("clear", "cleared"),
    _conv("deleted-session", "gone", "2026-01-20", [_u("guava notes"), _a("guava answer")]),
    Step("delete", "deleted-session"),
    # -- a parent truncated after a branch took all of it: the branch still shows ref.0-2
    _conv(
        "refactor",
        "ref",
        "2026-01-21",
        [
            _u("Rename the helper parse_config to load_settings across the codebase"),
            _a("Renamed parse_config in 14 files; load_settings keeps the old signature."),
            _u("Also update the docs mention of parse_config"),
        ],
        metadata={"topic": "refactoring", "project": {"name": "atlas", "tier": 2}},
    ),
    _conv(
        "refactor-b",
        "refb",
        "2026-01-22",
        [_a("In this branch we keep parse_config as an alias.")],
        branch_from="refactor",
    ),
    Step("truncate", "refactor", 1),
    # -- API design talk (SQL words as prose), a system prompt, metadata not searched
    _conv(
        "api-design",
        "api",
        "2026-01-23",
        [
            _u("Should search(query) return SessionRef objects or plain names?"),
            _a("Return SessionRef: callers need the position too, and the role of the hit."),
            _a("The old migration ran DROP TABLE messages_backup before copying."),
        ],
        metadata={"topic": "api", "tags": ["client-x"], "project": {"name": "atlas", "tier": 2}},
    ),
    _conv(
        "system-prompts",
        "sys",
        "2026-01-24",
        [
            {"role": "system", "content": "You are a careful coding agent."},
            _u("List the files in src/app"),
            _a("src/app contains main.py, codec.py and __init__.py"),
            {"role": "user", "content": "thanks", "metadata": {"note": "zebracorn"}},
        ],
        metadata={"topic": "unicornfish", "tags": ["client-y"]},
    ),
)
"""The script that builds the store, in order."""


def _all_keys() -> frozenset[str]:
    keys = [k for c in CORPUS if isinstance(c, Conversation) for k, _ in c.messages]
    return frozenset(keys)


REMOVED = frozenset(
    {
        "draft.2",  # its session was deleted, and the branch forked before it
        "scratch.0",
        "scratch.1",
        "scratch.2",
        "scratch.3",  # truncated away
        "pop.2",  # popped
        "clr.0",
        "clr.1",  # cleared
        "gone.0",
        "gone.1",  # deleted
    }
)
"""Messages the store held once and no session shows any more."""

ALL = _all_keys() - REMOVED
"""Every message some session shows: what a query without a term finds."""

# the messages containing some words, for the sets below
_QUASAR = frozenset({"draft.0", "draft.1", "final.0"})
_MIGRATION = frozenset({"mig.0", "mig.5", "api.2"})
_TOOL = frozenset({"mig.2", "perf.1"})


@dataclass(frozen=True)
class Case:
    """A query (and keyword filters) and the keys of the messages it must find; with
    ``order``, the exact order of the hits (order "newest" unless ``relevance``)."""

    query: str
    expected: frozenset[str]
    order: tuple[str, ...] | None = None
    relevance: bool = False
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        text = self.query if len(self.query) <= 40 else f"{self.query[:30]}...({len(self.query)})"
        return (ascii(text) + (f"+{sorted(self.kwargs)}" if self.kwargs else ""))[:80]


def _c(query: str, *keys: str, **kwargs: Any) -> Case:
    return Case(query, frozenset(keys), kwargs=kwargs)


QUERIES: tuple[Case, ...] = (
    # prose, phrases, stemming
    _c("migration bug", "mig.0", "mig.5"),
    _c('"migration bug"', "mig.5"),
    _c('"database is locked"', "mig.2", "mig.3"),
    _c("database locked", "mig.2", "mig.3"),
    _c("migration", *_MIGRATION),
    _c("migrations", *_MIGRATION),
    _c("migra*", *_MIGRATION),
    _c("lock", "mig.5", "rel.0"),  # locks -> lock; "locked" is another word
    _c("locked", "mig.2", "mig.3"),
    _c("queries", "rel.0", "rel.1", "api.0"),
    _c("query", "rel.0", "rel.1", "api.0"),
    _c("retries", "retry.0"),  # pop.2 (kiwifruit retries) was popped
    _c("kiwifruit", "pop.0", "pop.1"),
    _c("marmalade", "scratch.4"),
    _c("nectarine", "scratch.5"),
    _c("brainstorm"),
    _c("wombat"),
    _c("papaya"),
    _c("guava"),
    _c("quasar", *_QUASAR),
    # code identifiers, paths, error codes
    _c("get_items", "mig.3", "lint.1", "lint.3"),
    _c("getItems", "mig.3", "lint.1", "lint.3"),
    _c("GET_ITEMS", "mig.3", "lint.1", "lint.3"),
    _c("test_items.py", "lint.1"),
    _c("SessionManager", "mig.4", "mig.5"),
    _c("SessionManager.close", "mig.5"),
    _c("manager", "mig.4", "mig.5"),
    _c("HTTPServer", "net.1"),
    _c("E501", "lint.0", "lint.1"),
    _c("e501", "lint.0", "lint.1"),
    _c("ERR_CONNECTION_REFUSED", "net.0"),
    _c("err_connection*", "net.0", "net.2"),
    _c('"connection refused"', "net.0"),
    _c("sqlite3.OperationalError", "mig.2"),
    _c("OperationalError", "mig.2"),
    _c("src/app/main.py", "mig.2", "lint.0"),
    _c("main.py", "mig.2", "lint.0", "sys.2"),
    _c("src/app", "mig.1", "mig.2", "lint.0", "perf.1", "sys.1", "sys.2"),
    _c("127.0.0.1", "net.1"),
    _c("proxy_read_timeout", "net.3"),
    # tool calls and outputs, structured content, compressed content
    _c("run_shell", "mig.1", "mig.2"),
    _c("alembic upgrade head", "mig.1"),
    _c("call_Zx9q"),  # ids are not text
    _c("function"),  # nor "type" values
    _c("image_url"),  # nor dict keys
    _c("lint-report.png", "lint.2"),
    _c("screenshot", "lint.2"),
    _c("zstandard_decompress_chunk", "perf.1"),
    _c("handler_loop", "perf.1", "perf.2"),
    _c("hot_paths"),  # a dict key
    _c("json.loads", "perf.1", "perf.2"),
    _c("zebracorn"),  # message metadata is not text
    _c("unicornfish"),  # nor session metadata
    _c("client-x"),  # tags are metadata
    # CJK
    _c("会话", "zh.0"),
    _c("迁移", "zh.0", "zh.1"),
    _c("数据库", "zh.1"),
    _c("会話", "ja.1"),
    _c("セッション", "ja.0"),
    _c("検索", "ja.0"),
    _c("東京", "ja.1"),
    _c("再構築", "ja.1"),
    _c("세션", "ja.2"),
    # escapes, emoji, RTL, long words
    _c("here\x00end", "esc.0"),
    _c("\ud83d", "esc.1"),
    _c("␛", "esc.2"),
    _c("🚀", "esc.3"),
    _c("🐛 gone", "esc.3"),
    _c("שלום", "esc.4"),
    _c("بالعالم", "esc.4"),
    _c(LONG_WORD, "esc.5"),
    _c("x" * 120, "esc.5"),  # cut to the same 100 characters
    _c("x" * 99),
    _c("x" * 99 + "*", "esc.5"),
    _c("alert", "esc.6"),
    _c("<script>", "esc.6"),
    # OR, exclusion
    _c("kiwifruit OR quasar", "pop.0", "pop.1", *_QUASAR),
    _c("quasar -guide", "draft.1"),
    _c("quasar -plugin"),
    _c("marmalade OR nectarine -decision"),
    # filters in the query
    _c("role:tool", *_TOOL),
    _c("role:system", "sys.0"),
    _c("agent role:system", "sys.0"),
    _c("role:assistant upgrade", "mig.1", "mig.3", "retry.0"),
    _c("session:refactor parse_config", "ref.2"),
    _c('session:"refactor" parse_config', "ref.2"),
    _c("session:refactor-b parse_config", "ref.0", "ref.1", "ref.2", "refb.0"),
    _c("session:draft-notes-final quasar", *_QUASAR),
    _c("session:draft-notes quasar"),  # deleted
    _c("session:no-such-session"),
    _c("session:migration-bug-retry connection", "retry.0"),
    _c("tag:client-x migration", *_MIGRATION),
    _c("tag:docs quasar", *_QUASAR),
    _c("tag:client-x quasar"),
    _c("tag:client-y src/app", "lint.0", "sys.1", "sys.2"),
    _c("after:2026-01-16 quasar", "final.0"),
    _c("before:2026-01-16 quasar", "draft.0", "draft.1"),
    _c(
        "after:2026-01-10 before:2026-01-12",
        "ja.0",
        "ja.1",
        "ja.2",
        *(f"esc.{i}" for i in range(7)),
    ),
    # keyword filters
    _c("upgrade", "mig.1", "mig.3", "retry.0", role="assistant"),
    _c("upgrade", "mig.1", "mig.2", "mig.3", "retry.0", role=["assistant", "tool"]),
    _c("parse_config", "ref.2", session="refactor"),
    _c("parse_config", "ref.0", "ref.1", "ref.2", "refb.0", session="refactor-b"),
    _c("connection", "mig.3", session="migration-bug"),
    _c("connection", "retry.0", session="migration-bug-retry"),
    _c("run_shell", "mig.1", "mig.2", session="migration-bug-retry"),
    _c("migration", "mig.0", "mig.5", "api.2", tags="client-x"),
    _c("migration", "mig.0", "mig.5", tags=["client-x", "backend"]),
    _c("src/app", "lint.0", "sys.1", "sys.2", tags="client-y"),
    _c("migration", "mig.0", "mig.5", "api.2", metadata={"project": {"name": "atlas"}}),
    _c("migration", "mig.0", "mig.5", metadata={"project": {"tier": 1}}),
    _c("parse_config", "refb.0", "ref.0", "ref.1", "ref.2", metadata={"topic": "refactoring"}),
    _c("quasar", "final.0", after=datetime(2026, 1, 16, tzinfo=UTC)),
    _c("quasar", "draft.0", "draft.1", before=datetime(2026, 1, 16, tzinfo=UTC)),
    _c(
        "quasar",
        "draft.1",
        after=datetime(2026, 1, 15, 9, 1, tzinfo=UTC),
        before=datetime(2026, 1, 16, tzinfo=UTC),
    ),
    _c("migration", "mig.0", role="user", tags="client-x"),
    _c("quasar", "final.0", after=date(2026, 1, 16)),
    _c("quasar", "draft.0", "draft.1", before="2026-01-16"),
    _c("after:2026 before:2026-02 quasar", *_QUASAR),  # a year, a month: their first day
    _c("after:2027 quasar"),
    _c("before:2026-01-15T09:01 quasar", "draft.0"),  # UTC, exclusive
    _c("role:user role:system agent OR kiwifruit", "sys.0", "pop.0"),  # roles: alternatives
    _c("tag:client-x tag:backend migration", "mig.0", "mig.5"),  # tags: all of them
)
"""Queries on ordinary text, with filters; the expected hit set is the same on every
backend."""

ORDERED: tuple[Case, ...] = (
    Case("deadlock", frozenset({"dl.0", "dl.1"}), order=("dl.0", "dl.1"), relevance=True),
    Case("deadlock", frozenset({"dl.0", "dl.1"}), order=("dl.1", "dl.0")),
    Case("quasar", _QUASAR, order=("final.0", "draft.1", "draft.0")),
    Case("migration", _MIGRATION, order=("api.2", "mig.5", "mig.0")),
)
"""Queries whose order is unambiguous (``relevance`` True: order="relevance", else
order="newest")."""

_NOT_QUASAR = ALL - _QUASAR


def _adv(query: str, expected: frozenset[str] | tuple[str, ...] = ()) -> Case:
    return Case(query, frozenset(expected))


ADVERSARIAL: tuple[Case, ...] = (
    # no term at all: the newest messages, i.e. everything shown
    _adv("", ALL),
    _adv("   \t\n  ", ALL),
    _adv("*", ALL),
    _adv("**", ALL),
    _adv(":", ALL),
    _adv("^", ALL),
    _adv("-", ALL),
    _adv("--x", ALL),  # excludes the term x, which nothing has
    _adv("%", ALL),
    _adv("_", ALL),
    _adv('"', ALL),
    _adv('""', ALL),
    _adv("()", ALL),
    _adv("[]", ALL),
    _adv("{}", ALL),
    _adv(".*", ALL),
    _adv("\x00", ALL),
    _adv("\u200f", ALL),
    _adv("-quasar", _NOT_QUASAR),
    # one word wrapped in syntax of other languages: the word
    _adv('"quasar', _QUASAR),
    _adv('quasar"', _QUASAR),
    _adv("'quasar'", _QUASAR),
    _adv("QUASAR", _QUASAR),
    _adv("ｑｕａｓａｒ", _QUASAR),  # noqa: RUF001 (full-width letters: NFKC gives the ASCII word)
    _adv("quasars", _QUASAR),
    _adv("quas*", _QUASAR),
    _adv("quas**", _QUASAR),
    _adv("*quasar", _QUASAR),
    _adv("quasar:*", _QUASAR),
    _adv("quasar.*", _QUASAR),
    _adv("^quasar$", _QUASAR),
    _adv("%quasar%", _QUASAR),
    _adv("quasar_", _QUASAR),
    _adv("quasar\\", _QUASAR),
    _adv("!quasar", _QUASAR),
    _adv("quasar\x00", _QUASAR),
    _adv("(quasar|plugin)", _QUASAR),
    _adv("quasar + plugin", _QUASAR),
    _adv("quasar & plugin", _QUASAR),
    _adv("quasar & !plugin", _QUASAR),
    _adv("quasar <-> plugin", _QUASAR),
    _adv('"quasar plugin', _QUASAR),
    _adv('"quasar" "plugin"', _QUASAR),
    _adv('quasar"plugin', _QUASAR),  # a phrase, or two words: the same three
    _adv('"" quasar', _QUASAR),
    _adv("quasar " * 15_000, _QUASAR),  # ~100 KB
    _adv("kiwi:*", ("pop.0", "pop.1")),
    # operator words are words
    _adv("quasar AND plugin", ("draft.1",)),  # only draft.1 says "and"
    _adv("quasar NOT plugin"),
    _adv("quasar NEAR plugin"),
    _adv("NEAR(quasar plugin)"),
    _adv("quasar OR"),  # a dangling OR is the word "or"
    _adv("OR quasar"),
    _adv("quasar or kiwifruit"),
    _adv('"plugin quasar"'),
    # FTS5 and tsquery syntax
    _adv("{body}: quasar"),
    _adv("body:quasar"),
    _adv("col:x"),
    _adv("a <-> b"),
    _adv("\\d+"),
    _adv("[a-z]+"),
    _adv('ab"c'),
    _adv("qu_sar"),
    _adv("q%"),
    # filters with invalid values are words
    _adv("after:xyz"),
    _adv("before:2026-13-45"),
    _adv("after:", ("dl.1",)),  # the word "after"
    _adv("role:", ("api.1",)),  # the word "role"
    _adv("role:nonexistent"),
    # SQL
    _adv("'; DROP TABLE messages; --", ("api.2",)),  # drop, table, message: api.2 has them
    _adv("' OR 1=1 --"),
    _adv("quasar' OR '1'='1", _QUASAR),  # quasar OR the phrase "1 1"
    _adv('"; DELETE FROM messages_fts; --'),
    # symbols, scripts, encodings
    _adv("🚀", ("esc.3",)),
    _adv("🚀🚀"),
    _adv("🚀🐛"),
    _adv("\ud83d", ("esc.1",)),
    _adv("\udfff"),
    _adv("␛d83d"),  # a literal ␛ then d83d: never the surrogate's term
    _adv("\u202eשלום", ("esc.4",)),  # noqa: RUF001
    _adv("z" * 100_000),
    _adv("会话 OR 会話", ("zh.0", "ja.1")),
)
"""Strings that must never raise and never match wrongly (most find nothing, or exactly
the messages of one ordinary word they contain)."""
