"""The text side of full-text search (coda_session.search): analysis, the query grammar,
its FTS5 and tsquery translations against the real engines, ranking and snippets.

Pure Python, no store: a few seconds. The FTS5 cases use a real in-memory SQLite FTS5
table (tokenize='ascii'), the tsquery cases the real PostgreSQL server
(CODA_TEST_POSTGRES_URL; they skip without it).
"""

from __future__ import annotations

import functools
import os
import sqlite3
import unicodedata
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import make_url

from coda_session.codec import encode_message
from coda_session.search.analysis import (
    INDEX_VERSION,
    MAX_TERM_LENGTH,
    index_body,
    message_text,
    query_terms,
    record_text,
    term_spans,
    terms,
)
from coda_session.search.query import MAX_ITEMS, Phrase, Query, matches, parse, to_fts5, to_tsquery
from coda_session.search.ranking import rank, score
from coda_session.search.snippet import make_snippet
from tests.support import PG_URL_VARIABLE

TS = "2024-05-01T10:00:00+00:00"


def found(document: str, query: str) -> bool:
    """Whether a message whose text is ``document`` matches ``query``."""
    return matches(parse(query), terms(document))


# -- analysis -------------------------------------------------------------------------


def test_index_version_is_a_positive_int() -> None:
    assert isinstance(INDEX_VERSION, int) and INDEX_VERSION >= 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello, World!", ["hello", "world"]),
        ("get_items", ["get", "item"]),
        ("src/app/main.py", ["src", "app", "main", "py"]),
        ("sqlite3.OperationalError", ["sqlite3", "operationalerror", "operational", "error"]),
        ("E501 line too long", ["e501", "line", "too", "long"]),
        ("ERR_CONNECTION_REFUSED", ["err", "connection", "refused"]),
        ("SessionManager", ["sessionmanager", "session", "manager"]),
        ("HTTPServer", ["httpserver", "http", "server"]),
        ("utf8Decoder", ["utf8decoder", "utf8", "decoder"]),
        (
            "queries classes messages status analysis this",
            ["query", "classe", "message", "status", "analysis", "this"],
        ),
        ("Straße CAFÉ", ["strasse", "café"]),
        ("\uff21\uff22\uff23\uff11\uff12\uff13", ["abc123"]),
        ("会话", ["会话"]),
        ("会", ["会"]),
        ("我们的会话管理", ["我们", "们的", "的会", "会话", "话管", "管理"]),
        ("a\x00b", ["a", "b"]),
        ("x\u241by", ["x", "\u241b", "y"]),
        ("\ud800", ["\u241bd800"]),
        ("ok👍🏽done", ["ok", "👍", "🏽", "done"]),
        ("a+b=c $5 ~x", ["a", "b", "c", "5", "x"]),
        ("", []),
        ("  \t\n ", []),
    ],
)
def test_terms(text: str, expected: list[str]) -> None:
    assert terms(text) == expected
    assert [term for term, _, _ in term_spans(text)] == expected


def test_decomposed_accents_are_the_composed_word() -> None:
    composed = unicodedata.normalize("NFC", "café résumé")
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    assert terms(composed) == terms(decomposed)


def test_words_with_combining_marks_stay_whole() -> None:
    assert terms("हिन्दी भाषा") == ["हिन्दी", "भाषा"]
    assert terms("ภาษาไทย") == ["ภาษาไทย"]


def test_long_terms_are_cut() -> None:
    word = "x" * 250
    assert terms(word) == ["x" * MAX_TERM_LENGTH]
    assert found(word, "x" * 120)


def test_terms_hold_no_ascii_separator_nor_surrogate() -> None:
    text = (
        "a\x00\x1b\x7f\ud800\udfff b\u3000c\u2028d  e\u200bf  g\u00a0h \u2474 \u3231 \uff04 \ufe69"
    )
    for term in terms(text):
        assert term
        assert not any(ord(c) < 128 and not c.isalnum() for c in term), term
        assert not any("\ud800" <= c <= "\udfff" for c in term), term
        assert term == term.casefold() or not term.isascii()


def test_a_camel_cased_word_keeps_its_place_in_a_phrase() -> None:
    assert found("SQLite reports the error", '"sqlite reports"')
    assert found("call the getItems helper", '"the getitems helper"')
    assert found("call the getItems helper", '"the getItems helper"')
    assert found("the SessionManager saved", "session")
    assert found("the SessionManager saved", "manager saved")
    assert found("the SessionManager saved", '"session manager"')


def test_term_spans_point_at_the_original_characters() -> None:
    text = "Les SessionManagers de 会话 ✓"
    spans = term_spans(text)
    assert [(t, text[a:b]) for t, a, b in spans] == [
        ("le", "Les"),
        ("sessionmanager", "SessionManagers"),
        ("de", "de"),
        ("会话", "会话"),
        ("✓", "✓"),
        ("session", "Session"),
        ("manager", "Managers"),
    ]


def test_index_body_splits_back_into_the_terms() -> None:
    text = "The SessionManager saved 会话 \ud800 ✓ in src/app.py"
    body = index_body(terms(text))
    assert body.split(" ") == terms(text)


# -- what is findable ------------------------------------------------------------------

CODE = (
    "Traceback: sqlite3.OperationalError: database is locked in src/app/main.py, "
    "flake8 says E501; curl: ERR_CONNECTION_REFUSED; call get_items() on the SessionManager"
)


@pytest.mark.parametrize(
    "query",
    [
        "get_items",
        "get items",
        "items",
        "SessionManager",
        "session",
        "manager",
        "sessionmanager",
        "sqlite3.OperationalError",
        "OperationalError",
        "operational",
        "sqlite3",
        "src/app/main.py",
        "main.py",
        "app/main",
        "E501",
        "e501",
        "ERR_CONNECTION_REFUSED",
        "connection_refused",
        "err_conn*",
        "Session*",
        "locked",
        '"database is locked"',
        "databases",
    ],
)
def test_code_is_found_as_written_and_by_its_parts(query: str) -> None:
    assert found(CODE, query)


@pytest.mark.parametrize(
    "query",
    ["get_item_s", "main.rs", "E502", "ERR_CONNECTION_RESET", '"locked database"', "sqlite4"],
)
def test_code_is_not_found_by_what_it_does_not_hold(query: str) -> None:
    assert not found(CODE, query)


CHINESE = "我们需要修复会话管理器中的迁移错误\uff0c然后再发布。"
JAPANESE = "セッションの移行に失敗しました。東京のサーバーで再試行します。"


@pytest.mark.parametrize("query", ["会话", "管理器", "迁移错误", "修复", "发布", "会*"])
def test_chinese_words_inside_a_sentence(query: str) -> None:
    assert found(CHINESE, query)


@pytest.mark.parametrize("query", ["セッション", "移行", "失敗", "東京", "サーバー", "再試行"])
def test_japanese_words_inside_a_sentence(query: str) -> None:
    assert found(JAPANESE, query)


@pytest.mark.parametrize("query", ["会议", "管理员", "大阪", "京東"])
def test_cjk_words_not_in_the_text_are_not_found(query: str) -> None:
    assert not found(CHINESE, query) and not found(JAPANESE, query)


@pytest.mark.parametrize(
    ("text", "query"),
    [
        ("before\x00after", "before\x00after"),
        ("lone \udc80 surrogate", "\udc80"),
        ("lone \udc80 surrogate", "lone \udc80"),
        ("the \u241b symbol", "\u241b"),
        ("party 🎉 time", "🎉"),
        ("thumbs 👍🏽 up", "👍🏽"),
        ("arrows → here", "→"),
    ],
)
def test_escaped_and_symbol_characters_are_found_as_written(text: str, query: str) -> None:
    assert found(text, query)


def test_a_lone_surrogate_token_is_not_made_by_text() -> None:
    assert not found("\u241bd800 written out", "\ud800")
    assert not found("lone \udc80 surrogate", "\ud800")


def test_english_plurals_and_prefixes() -> None:
    text = "The migrations ran; two queries failed."
    assert found(text, "migration")
    assert found(text, "query")
    assert found(text, "queries")
    assert found(text, "migrat*")
    assert found(text, "migrations*")
    assert not found(text, "migrate")


# -- the searchable text of a message ---------------------------------------------------


def test_message_text_of_structured_content_and_tool_calls() -> None:
    message = {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Let me look at the config."},
            {
                "type": "tool_use",
                "id": "toolu_ZZZ",
                "name": "read_file",
                "input": {"path": "src/config.toml"},
            },
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            {
                "type": "image",
                "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgoAAAA"},
            },
        ],
        "timestamp": "2024-05-01T10:00:00+00:00",
        "tool_calls": [
            {
                "id": "call_QQQ",
                "type": "function",
                "function": {"name": "grep", "arguments": '{"pattern": "ERR_TIMEOUT"}'},
            }
        ],
        "name": "helper-bot",
        "metadata": {"secret": "metadata-only-word", "tags": ["client-x"]},
    }
    text = message_text(message)
    for query in [
        "config",
        "read_file",
        "src/config.toml",
        "ERR_TIMEOUT",
        "grep",
        "helper-bot",
        "image/png",
    ]:
        assert found(text, query), query
    for query in [
        "toolu_ZZZ",
        "call_QQQ",
        "tool_use",
        "function",
        "iVBORw0KGgo",
        "metadata-only-word",
        "client-x",
        "assistant",
        "2024",
    ]:
        assert not found(text, query), query


def test_message_text_of_tool_output() -> None:
    message = {
        "role": "tool",
        "content": "FAILED tests/test_api.py::test_save - AssertionError",
        "tool_call_id": "call_ABC",
        "timestamp": "t",
    }
    text = message_text(message)
    assert found(text, "tests/test_api.py") and found(text, "AssertionError")
    assert not found(text, "call_ABC")


def test_message_text_skips_metadata_and_keys() -> None:
    message = {
        "role": "user",
        "content": {"question": "why"},
        "timestamp": "t",
        "metadata": {"note": "hidden"},
    }
    assert message_text(message) == "why"


def test_message_text_survives_deep_nesting() -> None:
    value: object = "deep"
    for _ in range(5000):
        value = [value]
    assert message_text({"role": "user", "content": value, "timestamp": "t"}) == "deep"


@pytest.mark.parametrize(
    "message",
    [
        {"role": "user", "content": "plain text here", "timestamp": TS},
        {"role": "user", "content": "with \x00 NUL and \ud800 and \u241b", "timestamp": TS},
        {"role": "user", "content": "with a name", "name": "alice", "timestamp": TS},
        {"role": "user", "content": [{"type": "text", "text": "parts"}], "timestamp": TS},
        {"role": "user", "content": None, "timestamp": TS},
        {"role": "user", "content": "long compressed words " * 400, "timestamp": TS},
        {
            "role": "user",
            "content": [{"type": "text", "text": "compressed " * 400}],
            "timestamp": TS,
        },
    ],
)
def test_record_text_is_the_message_text(message: dict[str, object]) -> None:
    for compress in (False, True):
        record = encode_message(message, compress=compress)
        assert record_text(record) == message_text(record.to_dict())
        assert record_text(record) == message_text(message)


def test_record_text_of_a_plain_message_is_its_content() -> None:
    record = encode_message({"role": "user", "content": "just this", "timestamp": TS})
    assert record_text(record) is record.content


# -- the query grammar ------------------------------------------------------------------


def phrase(*words: str, prefix: bool = False) -> Phrase:
    return Phrase(tuple(words), prefix)


@pytest.mark.parametrize(
    ("text", "groups", "excluded"),
    [
        ("hello world", [[phrase("hello")], [phrase("world")]], []),
        ('"hello world"', [[phrase("hello", "world")]], []),
        ('"unterminated phrase', [[phrase("unterminated", "phrase")]], []),
        ("migrat*", [[phrase("migrat", prefix=True)]], []),
        ('"schema migrat"*', [[phrase("schema", "migrat", prefix=True)]], []),
        ("-draft report", [[phrase("report")]], [phrase("draft")]),
        ('-"work in progress" x', [[phrase("x")]], [phrase("work", "in", "progress")]),
        ("a OR b c", [[phrase("a"), phrase("b")], [phrase("c")]], []),
        ("a OR b OR c", [[phrase("a"), phrase("b"), phrase("c")]], []),
        ("a or b", [[phrase("a")], [phrase("or")], [phrase("b")]], []),
        ("OR a", [[phrase("or")], [phrase("a")]], []),
        ("a OR", [[phrase("a")], [phrase("or")]], []),
        ("a OR -b", [[phrase("a")], [phrase("or")]], [phrase("b")]),
        ("a AND b", [[phrase("a")], [phrase("and")], [phrase("b")]], []),
        ("NOT x", [[phrase("not")], [phrase("x")]], []),
        ("NEAR(a b)", [[phrase("near", "a")], [phrase("b")]], []),
        ("col:x", [[phrase("col", "x")]], []),
        ('ab"c', [[phrase("ab", "c")]], []),
        ("get_items", [[phrase("get", "item")]], []),
        ("SessionManager", [[phrase("sessionmanager")]], []),
        ("会话管理", [[phrase("会话", "话管", "管理")]], []),
        ("* - ^ ()", [], []),
        ("", [], []),
        ("-x", [], [phrase("x")]),
    ],
)
def test_parse(text: str, groups: list[list[Phrase]], excluded: list[Phrase]) -> None:
    q = parse(text)
    assert [list(g) for g in q.groups] == groups
    assert list(q.excluded) == excluded
    assert q.has_terms == bool(groups)


def test_filters() -> None:
    q = parse(
        'role:user Role:tool tag:"client x" tag:urgent session:main '
        "after:2024-05-01 before:2024-06-01T12:00:00+02:00 fix"
    )
    assert q.roles == ("user", "tool")
    assert q.tags == ("client x", "urgent")
    assert q.sessions == ("main",)
    assert q.after == datetime(2024, 5, 1, tzinfo=UTC)
    assert q.before == datetime(2024, 6, 1, 10, 0, tzinfo=UTC)
    assert [list(g) for g in q.groups] == [[phrase("fix")]]
    assert q.notes == ()


def test_years_and_months_are_their_first_day() -> None:
    q = parse("after:2024-05 before:2025 role:user*")
    assert q.after == datetime(2024, 5, 1, tzinfo=UTC)
    assert q.before == datetime(2025, 1, 1, tzinfo=UTC)
    assert q.roles == ("user*",)


def test_several_dates_narrow_the_range() -> None:
    q = parse("after:2024-01-01 after:2024-03-01 before:2024-12-01 before:2024-06-01")
    assert q.after == datetime(2024, 3, 1, tzinfo=UTC)
    assert q.before == datetime(2024, 6, 1, tzinfo=UTC)
    assert not q.has_terms


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("after:notadate", ("after", "notadate")),
        ("before:2024-13-45", ("before", "2024", "13", "45")),
        ("role:", ("role",)),
        ('tag:""', ("tag",)),
        ("-role:user", None),
    ],
)
def test_unusable_filters_are_words(text: str, words: tuple[str, ...] | None) -> None:
    q = parse(text)
    assert q.roles == q.tags == q.sessions == () and q.after is None and q.before is None
    assert q.notes
    if words is None:
        assert q.excluded == (phrase("role", "user"),)
    else:
        assert q.groups == ((Phrase(words),),)


def test_only_the_first_items_are_used() -> None:
    q = parse(" ".join(f"w{i}" for i in range(MAX_ITEMS + 50)))
    assert len(q.groups) == MAX_ITEMS
    assert q.groups[-1] == (Phrase((f"w{MAX_ITEMS - 1}",)),)
    assert any(str(MAX_ITEMS) in note for note in q.notes)


def test_translations_quote_every_term() -> None:
    q = parse('"a b"* -c d OR e')
    assert to_fts5(q) == ('((body : "a" + "b" *) AND (body : "d" OR body : "e")) NOT (body : "c")')
    assert to_tsquery(q) == "(('a' <-> 'b':*)) & (('d') | ('e')) & !('c')"
    assert to_fts5(parse("-c")) is None and to_tsquery(parse("-c")) is None
    assert to_fts5(parse("")) is None and to_tsquery(parse("")) is None


def test_translations_escape_quotes_in_terms() -> None:
    # no analysed term holds a quote, but a Query built by hand may
    q = Query(groups=((Phrase(('a"b', "c'd\\e")),),))
    assert to_fts5(q) == '(body : "a""b" + "c\'d\\e")'
    assert to_tsquery(q) == "(('a\"b' <-> 'c''d\\\\e'))"


def test_matches_reference_semantics() -> None:
    doc = terms("the quick brown fox jumps over the lazy dog")
    assert matches(parse('"quick brown"'), doc)
    assert not matches(parse('"brown quick"'), doc)
    assert matches(parse('"quick bro"*'), doc)
    assert not matches(parse('"quick fo"*'), doc)
    assert matches(parse("fox -cat"), doc)
    assert not matches(parse("fox -dog"), doc)
    assert matches(parse("cat OR dog"), doc)
    assert not matches(parse("cat OR cow"), doc)
    assert matches(parse("-cat"), doc)
    assert matches(parse(""), doc)
    assert not matches(parse('-"lazy dog"'), doc)


# -- the translations against the real engines ------------------------------------------

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    CODE,
    CHINESE,
    JAPANESE,
    "before\x00after, a lone \udc80 surrogate and the \u241b symbol 🎉 👍🏽",
    "Fixed the migration bug in 0011_session_filters; migrations now run in order.",
    'He said "hello world" and then: DROP TABLE messages; -- not really',
    "AND OR NOT NEAR are just words here, as are col and x in col:x",
    "a b c d e f g",
    "",
    # longer than a tsvector's positions reach (16383), and a lexeme with over 256 of them
    "filler words " * 9000 + "quick brown fox and the lazy dog",
    "hello world " * 300 + "the quick fox said hello",
]


@pytest.fixture(scope="module")
def fts5() -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE docs USING fts5(body, scope, tokenize='ascii')")
    db.executemany(
        "INSERT INTO docs(rowid, body, scope) VALUES (?, ?, ?)",
        # every scope holds the common words: only a restriction to body keeps them out
        [(i, index_body(terms(text)), "the hello world a b") for i, text in enumerate(CORPUS)],
    )
    yield db
    db.close()


@functools.lru_cache(maxsize=512)
def cached_terms(text: str) -> list[str]:
    return terms(text)


def expected_rows(q: Query, corpus: Sequence[str]) -> list[int]:
    return [i for i, text in enumerate(corpus) if matches(q, cached_terms(text))]


def fts5_rows(db: sqlite3.Connection, q: Query) -> list[int]:
    expression = to_fts5(q)
    if expression is None:
        return [i for (i,) in db.execute("SELECT rowid FROM docs ORDER BY rowid")]
    rows = db.execute("SELECT rowid FROM docs WHERE docs MATCH ? ORDER BY rowid", (expression,))
    return [i for (i,) in rows]


def test_fts5_agrees_with_matches(fts5: sqlite3.Connection) -> None:
    for text in [
        "quick",
        '"brown fox"',
        "migrat*",
        "会话",
        "セッション",
        "\udc80",
        "🎉",
        "E501 -fox",
        "fox OR 会话",
        "session manager",
        "hello",
        "DROP TABLE",
    ]:
        q = parse(text)
        if q.excluded and not q.has_terms:
            continue
        assert fts5_rows(fts5, q) == [i for i in expected_rows(q, CORPUS)], ascii(text)


# -- ranking ------------------------------------------------------------------------------


def bodies(*texts: str) -> list[tuple[int, str]]:
    return [(i + 1, index_body(terms(text))) for i, text in enumerate(texts)]


def test_rank_prefers_more_occurrences_rarer_terms_and_shorter_messages() -> None:
    window = bodies(
        "the migration failed",  # 1
        "migration migration migration failed again",  # 2
        "a very long message that mentions the migration once among many other words",  # 3
        "the rollback failed",  # 4
        "rollback",  # 5
    )
    order = [ident for ident, _ in rank(parse("migration"), window)]
    assert order[:3] == [2, 1, 3]
    assert set(order[3:]) == {4, 5}
    # "rollback" is rarer in the window than "failed": it weighs more
    scores = dict(rank(parse("rollback OR failed"), window))
    assert scores[4] > scores[5] > scores[1]


def test_rank_ties_and_termless_queries_are_newest_first() -> None:
    window = bodies("same text", "same text", "same text")
    assert [ident for ident, _ in rank(parse("same"), window)] == [3, 2, 1]
    assert rank(parse(""), window) == [(3, 0.0), (2, 0.0), (1, 0.0)]
    assert rank(parse("-other"), window) == [(3, 0.0), (2, 0.0), (1, 0.0)]


def test_rank_counts_phrases_and_prefixes() -> None:
    window = bodies("brown fox", "fox brown", "foxes and foxglove", "")
    scores = dict(rank(parse('"brown fox"'), window))
    assert scores[1] > 0 and scores[2] == 0 and scores[4] == 0
    scores = dict(rank(parse("fox*"), window))
    assert scores[3] > scores[1] > 0


def test_score_is_rank_on_term_lists() -> None:
    texts = ["alpha beta", "beta beta gamma", "gamma"]
    q = parse("beta OR gamma")
    by_rank = dict(rank(q, bodies(*texts)))
    assert score(q, [terms(t) for t in texts]) == [by_rank[1], by_rank[2], by_rank[3]]
    assert rank(q, []) == [] and score(q, []) == []


def test_rank_is_deterministic() -> None:
    window = bodies(*[f"word{i % 7} common text {i}" for i in range(200)])
    q = parse("common word3 OR word5")
    assert rank(q, window) == rank(q, list(window))
    assert rank(q, window) == rank(q, list(reversed(window)))


# -- snippets -----------------------------------------------------------------------------


def test_snippet_marks_the_matches_where_they_are_written() -> None:
    text = "Before. The SessionManagers saved 会话管理 in two queries. After."
    snippet = make_snippet(text, parse("manager 会话 query"), markers=("<<", ">>"))
    assert (
        str(snippet)
        == "Before. The Session<<Managers>> saved <<会话>>管理 in two <<queries>>. After."
    )
    assert (
        snippet.render("*", "*")
        == "Before. The Session*Managers* saved *会话*管理 in two *queries*. After."
    )
    assert snippet.text == text
    assert [t for t, hit in snippet.fragments if hit] == ["Managers", "会话", "queries"]


def test_snippet_marks_a_phrase_as_one_match() -> None:
    snippet = make_snippet("see src/app/main.py now", parse("src/app/main.py"))
    assert str(snippet) == "see [src/app/main.py] now"


def test_snippet_html_escapes_everything() -> None:
    text = '<script>alert("x")</script> & the <b>bold</b> match'
    snippet = make_snippet(text, parse("match script"))
    assert snippet.html() == (
        "&lt;<mark>script</mark>&gt;alert(&quot;x&quot;)&lt;/<mark>script</mark>&gt; "
        "&amp; the &lt;b&gt;bold&lt;/b&gt; <mark>match</mark>"
    )


BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


def test_snippet_neutralises_terminal_controls() -> None:
    text = "red \x1b[31mALERT\x1b[0m \x00 \x07 \x7f \x9b2J \u202egnp.exe\u202c \u2066x\u2069 \ud800\nnext\tline"
    snippet = make_snippet(text, parse("alert"))
    shown = str(snippet)
    assert (
        shown
        == "red ␛[31m[ALERT]␛[0m ␀ ␇ ␡ \ufffd2J \ufffdgnp.exe\ufffd \ufffdx\ufffd \ufffd next line"
    )
    for rendered in (shown, snippet.html(), snippet.render("", "")):
        assert not any(
            ord(c) < 0x20
            or 0x7F <= ord(c) < 0xA0
            or c in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
            or "\ud800" <= c <= "\udfff"
            for c in rendered
        )


def test_snippet_window_goes_where_the_matches_cluster() -> None:
    filler = "lorem ipsum dolor sit amet " * 20
    text = f"needle early. {filler} needle and haystack and needle again. {filler}"
    snippet = make_snippet(text, parse("needle haystack"), width=80)
    shown = str(snippet)
    assert shown.startswith("…") and shown.endswith("…")
    assert shown.count("[needle]") == 2 and "[haystack]" in shown
    assert len(snippet.text) <= 80 + 2


def test_snippet_of_a_long_text_finds_a_match_deep_inside() -> None:
    filler = "nothing to see here " * 6_000  # 120,000 characters
    for at in (0, 49_990, 50_005, 101_000, len(filler)):
        cut = filler.rfind(" ", 0, at) + 1
        text = filler[:cut] + "the needle in haystack " + filler[cut:]
        snippet = make_snippet(text, parse('"needle in haystack"'), width=60)
        assert "[needle in haystack]" in str(snippet), at


def test_snippet_without_a_match_is_the_start() -> None:
    text = "word " * 100
    snippet = make_snippet(text, parse("absent"), width=30)
    assert not any(hit for _, hit in snippet.fragments)
    assert snippet.text.startswith("word word") and snippet.text.endswith("…")
    assert str(make_snippet("", parse("x"))) == ""


# -- adversarial queries: never an error, never a wrong match, on every engine ------------

ALPHABET: list[str] = [
    *"abcxyzABCXYZ019 _-./:*\"'\\()^{}+|&!<>~OR\t\n",
    *["\x00", "\x1b", "\x7f", "\x85", "\x9b", "\ud800", "\udc80", "\u241b", "\u0301"],
    *["\u00df", "\u0130", "\uff21", "\u2474", "\u3000", "\u200b", "\u202e", "\u2028"],
    *["会", "话", "管", "理", "セ", "ッ", "シ", "ョ", "ン", "ー", "한", "국"],
    *["😀", "👍", "🏽", "\ufe0f", "\u200d", "→", "€", "\ue000", "\U000e0001"],
    *["ह", "ि", "न", "्", "द", "ी", "é", "e"],
]

LONG_MIXED = ('ab"c -x NEAR( * OR "q:w" ^ \\ \' 会话 ' * 4000)[:100_000]
ADVERSARIAL = [
    "",
    " ",
    "\t\n  \r",
    '"',
    '""',
    '"""',
    "'",
    "''",
    "\\",
    "\\\\",
    '\\"',
    "*",
    "**",
    "-",
    "--",
    "-x",
    "--x",
    "- x",
    "x-",
    "a-b",
    '-"quick brown"',
    "^",
    "^x",
    "x^2",
    ":",
    "a:",
    ":a",
    "col:x",
    "body:fox",
    "scope:hello",
    "{body}:fox",
    "NEAR(quick brown)",
    "NEAR",
    "AND",
    "OR",
    "NOT",
    "a AND",
    "OR b",
    "a OR",
    "a OR OR b",
    "NOT fox",
    "fox NOT dog",
    "(",
    ")",
    "()",
    "(fox OR dog)",
    "[fox]",
    "{fox}",
    "a*b",
    "*a",
    "fox**",
    '"fox*"',
    'ab"c',
    'ab"c d"e',
    '"nested "quotes" inside"',
    '"unterminated phrase',
    "it's",
    "'; DROP TABLE messages; --",
    "DROP TABLE",
    "1; DELETE FROM docs",
    "%",
    "_",
    "x' OR '1'='1",
    "\x00",
    "a\x00b",
    "before\x00after",
    "\ud800",
    "\udc80",
    "\udfff\ud800",
    "😀",
    "🎉",
    "👍🏽",
    "🎉 OR 👍🏽",
    "\u241b",
    "\u241bd800",
    "\u202e",
    "role:",
    "role:user",
    "Role:user fox",
    'tag:"',
    'session:"a b',
    "after:notadate",
    "before:2024-13-01",
    "after:2024-01-01 fox",
    "-role:user",
    "hello world",
    '"hello world"',
    "hell*",
    "migrat* -bug",
    "E501 OR 会话",
    "会",
    "会话管理器",
    "セ",
    "\u3000",
    "&",
    "|",
    "!",
    "<->",
    ":*",
    "'a':*",
    "a & b",
    "!x",
    "x <-> y",
    "fox | dog",
    "MATCH",
    "rowid",
    "hello -hello",
    '-"" quick',
    "sqlite3.OperationalError",
    "src/app/main.py",
    "get_items -SessionManager",
    "x" * 100_000,
    LONG_MIXED,
]


def excluded_query(q: Query) -> Query:
    """A query matching what any of ``q``'s excluded phrases matches (to test how the
    exclusions translate when ``q`` has no positive term)."""
    return Query(groups=(q.excluded,))


def test_at_least_sixty_adversarial_queries() -> None:
    assert len(set(ADVERSARIAL)) >= 60


@pytest.mark.parametrize("text", ADVERSARIAL, ids=lambda text: ascii(text[:24]))
def test_adversarial_queries_on_fts5(fts5: sqlite3.Connection, text: str) -> None:
    q = parse(text)
    expression = to_fts5(q)
    if expression is None:
        assert not q.has_terms
        if q.excluded:
            banned = set(fts5_rows(fts5, excluded_query(q)))
            assert banned == set(expected_rows(excluded_query(q), CORPUS))
        return
    assert fts5_rows(fts5, q) == expected_rows(q, CORPUS)


def tsvector(doc_terms: Sequence[str]) -> str:
    """A tsvector literal for these terms at positions 1, 2, ... (as the SQL side builds)."""
    positions: dict[str, list[int]] = {}
    for position, term in enumerate(doc_terms, start=1):
        positions.setdefault(term, []).append(position)
    return " ".join(
        "'" + term.replace("\\", "\\\\").replace("'", "''") + "':" + ",".join(map(str, where))
        for term, where in positions.items()
    )


POSTGRES_URL = os.environ.get(PG_URL_VARIABLE)


async def postgresql_rows(conn: asyncpg.Connection, q: Query, corpus: Sequence[str]) -> list[int]:
    """The rows of ``docs`` that PostgreSQL finds for ``q``, as the SQL side does it: the
    positional tsquery on messages of at most 256 terms, the loose one (a superset) checked
    by ``matches`` on the longer ones."""
    exact, loose = to_tsquery(q), to_tsquery(q, positions=False)
    assert exact is not None and loose is not None
    rows = await conn.fetch(
        "SELECT id, size <= 256 AS exact FROM docs"
        " WHERE CASE WHEN size <= 256 THEN tsv @@ CAST($1 AS tsquery)"
        " ELSE tsv @@ CAST($2 AS tsquery) END ORDER BY id",
        exact,
        loose,
    )
    return [row["id"] for row in rows if row["exact"] or matches(q, terms(corpus[row["id"]]))]


def random_corpus_and_queries(seed: int) -> tuple[list[str], list[str]]:
    import random

    chance = random.Random(seed)
    words = ["abc", "xyz", "Abc", "会话", "😀", "OR", "-abc", "abc*", '"abc xyz"', "col:x"]

    def piece() -> str:
        roll = chance.random()
        if roll < 0.3:
            return chance.choice(words) + " "
        if roll < 0.4:
            return chr(chance.randrange(0x110000))  # any code point, surrogates too
        return chance.choice(ALPHABET)

    def text(size: int) -> str:
        return "".join(piece() for _ in range(chance.randint(0, size)))

    return [text(40) for _ in range(30)], [text(12) for _ in range(200)]


@pytest.mark.postgresql
@pytest.mark.skipif(not POSTGRES_URL, reason=f"{PG_URL_VARIABLE} is not set")
async def test_postgresql_agrees_with_matches() -> None:
    assert POSTGRES_URL is not None
    args = make_url(POSTGRES_URL).translate_connect_args(username="user")
    conn = await asyncpg.connect(**args, timeout=10)
    random_docs, random_queries = random_corpus_and_queries(18)
    cases = [(CORPUS, ADVERSARIAL), (random_docs, random_queries)]
    try:
        await conn.execute(
            "CREATE TEMPORARY TABLE docs (id integer PRIMARY KEY, size integer, tsv tsvector)"
        )
        for corpus, queries in cases:
            await conn.execute("DELETE FROM docs")
            await conn.executemany(
                "INSERT INTO docs (id, size, tsv) VALUES ($1, $2, CAST($3 AS tsvector))",
                [(i, len(terms(text)), tsvector(terms(text))) for i, text in enumerate(corpus)],
            )
            wrong = []
            for text in queries:
                q = parse(text)
                if not q.has_terms:
                    assert to_tsquery(q) is None
                    if not q.excluded:
                        continue
                    q = excluded_query(q)
                if await postgresql_rows(conn, q, corpus) != expected_rows(q, corpus):
                    wrong.append(ascii(text[:60]))
            assert wrong == []
    finally:
        await conn.close()


def test_fts5_agrees_with_matches_on_random_queries() -> None:
    corpus, queries = random_corpus_and_queries(18)
    db = sqlite3.connect(":memory:")
    try:
        db.execute("CREATE VIRTUAL TABLE docs USING fts5(body, scope, tokenize='ascii')")
        db.executemany(
            "INSERT INTO docs(rowid, body, scope) VALUES (?, ?, '')",
            [(i, index_body(terms(text))) for i, text in enumerate(corpus)],
        )
        for text in queries:
            q = parse(text)
            if not q.has_terms and q.excluded:
                q = excluded_query(q)
            if q.has_terms:
                assert fts5_rows(db, q) == expected_rows(q, corpus), ascii(text)
    finally:
        db.close()


# -- properties -------------------------------------------------------------------------

CHARACTERS = st.one_of(st.sampled_from(ALPHABET), st.characters())
TEXTS = st.text(CHARACTERS, max_size=60)
QUERY_WORDS = st.sampled_from(
    [
        "OR",
        "AND",
        "NOT",
        "NEAR",
        "-",
        "*",
        '"',
        "role:user",
        "tag:x",
        "after:2024-01-01",
        "before:x",
        "col:x",
        "abc",
        "xyz",
        "会话",
        "😀",
        "Abc",
        "abc*",
        "-abc",
        '"abc xyz"',
    ]
)
QUERIES = st.one_of(TEXTS, st.lists(st.one_of(QUERY_WORDS, TEXTS), max_size=6).map(" ".join))


def assert_valid_terms(text: str) -> None:
    found = terms(text)
    assert [term for term, _, _ in term_spans(text)] == found
    for _term, start, end in term_spans(text):
        assert 0 <= start < end <= len(text)
    for term in found:
        assert 0 < len(term) <= MAX_TERM_LENGTH
        assert not any(ord(c) < 128 and not c.isalnum() for c in term), ascii(term)
        assert not any(c.isupper() for c in term if c.isascii()), ascii(term)
        assert not any("\ud800" <= c <= "\udfff" or c.isspace() for c in term), ascii(term)
    if found:
        assert index_body(found).split(" ") == found
    assert query_terms(text) == found[: len(query_terms(text))]


@settings(max_examples=200, deadline=None)
@given(TEXTS)
def test_terms_are_well_formed(text: str) -> None:
    assert_valid_terms(text)


@pytest.fixture(scope="module")
def scratch() -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE docs USING fts5(body, scope, tokenize='ascii')")
    db.execute("CREATE VIRTUAL TABLE words USING fts5vocab(docs, 'instance')")
    yield db
    db.close()


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(TEXTS, min_size=1, max_size=5), QUERIES)
def test_fts5_agrees_with_matches_on_any_text_and_query(
    scratch: sqlite3.Connection, corpus: list[str], text: str
) -> None:
    scratch.execute("DELETE FROM docs")
    scratch.executemany(
        "INSERT INTO docs(rowid, body, scope) VALUES (?, ?, 'x')",
        [(i, index_body(terms(doc))) for i, doc in enumerate(corpus)],
    )
    # the ascii tokenizer reads each body back as exactly our terms
    for i, doc in enumerate(corpus):
        seen = scratch.execute(
            "SELECT term FROM words WHERE doc = ? AND col = 'body' ORDER BY offset", (i,)
        )
        assert [term for (term,) in seen] == terms(doc)
    q = parse(text)
    if not q.has_terms and q.excluded:
        q = excluded_query(q)
    if q.has_terms:
        assert fts5_rows(scratch, q) == expected_rows(q, corpus)


@settings(max_examples=200, deadline=None)
@given(st.text(CHARACTERS, max_size=400), QUERIES, st.integers(min_value=1, max_value=200))
def test_snippets_are_printable_and_come_from_the_text(text: str, query: str, width: int) -> None:
    snippet = make_snippet(text, parse(query), width=width, markers=("<", ">"))
    for shown in (str(snippet), snippet.html(), snippet.text):
        assert not any(
            ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or "\ud800" <= c <= "\udfff" or c in BIDI
            for c in shown
        ), ascii(shown)
    assert all(piece for piece, _ in snippet.fragments)
    if not text.strip():
        assert snippet.text in ("", "…")
