"""The text side of full-text search (coda_session.search): analysis, the query grammar,
its FTS5 and tsquery translations against the real engines, ranking and snippets.

Pure Python, no store: a few seconds. The FTS5 cases use a real in-memory SQLite FTS5
table (tokenize='ascii'), the tsquery cases the real PostgreSQL server
(CODA_TEST_POSTGRES_URL; they skip without it).
"""

from __future__ import annotations

import sqlite3
import unicodedata
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import pytest

from coda_session.codec import encode_message
from coda_session.search.analysis import (
    INDEX_VERSION,
    MAX_TERM_LENGTH,
    index_body,
    message_text,
    record_text,
    term_spans,
    terms,
)
from coda_session.search.query import Phrase, Query, matches, parse, to_fts5, to_tsquery

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
        ("sqlite3.OperationalError", ["sqlite3", "operational", "error", "operationalerror"]),
        ("E501 line too long", ["e501", "line", "too", "long"]),
        ("ERR_CONNECTION_REFUSED", ["err", "connection", "refused"]),
        ("SessionManager", ["session", "manager", "sessionmanager"]),
        ("HTTPServer", ["http", "server", "httpserver"]),
        ("utf8Decoder", ["utf8", "decoder", "utf8decoder"]),
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


def test_term_spans_point_at_the_original_characters() -> None:
    text = "Les SessionManagers de 会话 ✓"
    spans = term_spans(text)
    assert [(t, text[a:b]) for t, a, b in spans] == [
        ("le", "Les"),
        ("session", "Session"),
        ("manager", "Managers"),
        ("de", "de"),
        ("会话", "会话"),
        ("✓", "✓"),
        ("sessionmanager", "SessionManagers"),
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
        ("SessionManager", [[phrase("session", "manager")]], []),
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


def expected_rows(q: Query, corpus: Sequence[str]) -> list[int]:
    return [i for i, text in enumerate(corpus) if matches(q, terms(text))]


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
