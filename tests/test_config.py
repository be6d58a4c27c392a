"""Configuration: the spec's dict and TOML, defaults, and clear rejections."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from coda_session import InvalidConfigError, SessionConfig


def test_defaults_are_the_specs() -> None:
    c = SessionConfig.from_mapping(None)
    assert c.backend == "sqlite"
    assert c.storage_path == Path("~/.coda/sessions").expanduser()
    assert (c.connection_pool_size, c.autosave_interval, c.max_session_size) == (5, 300, 100)
    assert c.compress_messages is True and c.message_cache_size == 1000
    assert c.database_file == c.storage_path / "sessions.db"


def test_other_sections_are_ignored_and_tilde_expanded(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    c = SessionConfig.from_mapping({"ui": {"theme": "dark"}, "session": {"storage_path": "~/x"}})
    assert c.storage_path == tmp_path / "x"


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"backend": "redis"}, "session.backend"),
        ({"connection_pool_size": 0}, "session.connection_pool_size"),
        ({"connection_pool_size": "5"}, "session.connection_pool_size"),
        ({"autosave_interval": -1}, "session.autosave_interval"),
        ({"max_session_size": 0}, "session.max_session_size"),
        ({"compress_messages": "yes"}, "session.compress_messages"),
        ({"storage_path": 42}, "session.storage_path"),
        ({"message_cache_size": -5}, "session.message_cache_size"),
        ({"autosave_interval": True}, "session.autosave_interval"),
        ({"stroage_path": "/tmp/x"}, "session.stroage_path"),
        ({"database_url": "not a url"}, "session.database_url"),
        ({"database_url": "sqlite:////tmp/x.db"}, "session.database_url"),
        ({"backend": "memory", "database_url": "sqlite+aiosqlite:////tmp/x.db"}, "session"),
    ],
)
def test_rejections_name_the_key(section: dict[str, object], key: str) -> None:
    with pytest.raises(InvalidConfigError) as info:
        SessionConfig.from_mapping({"session": section})
    assert key in str(info.value)


def test_session_must_be_a_table() -> None:
    with pytest.raises(InvalidConfigError, match="'session'"):
        SessionConfig.from_mapping({"session": "sqlite"})
    with pytest.raises(InvalidConfigError):
        SessionConfig.from_mapping(["session"])  # type: ignore[arg-type]


def test_toml(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[session]\nbackend = "memory"\nmax_session_size = 2.5\n')
    c = SessionConfig.from_toml(f)
    assert c.backend == "memory" and c.max_session_size == 2.5
    f.write_text("[session\n")
    with pytest.raises(InvalidConfigError, match="TOML"):
        SessionConfig.from_toml(f)
    with pytest.raises(InvalidConfigError, match="cannot read"):
        SessionConfig.from_toml(tmp_path / "missing.toml")


def test_config_is_frozen() -> None:
    c = SessionConfig()
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen error
        c.backend = "memory"  # type: ignore[misc]


def test_explicit_url(tmp_path: Path) -> None:
    from coda_session import SessionManager

    url = f"sqlite+aiosqlite:///{tmp_path / 'custom.db'}"
    with SessionManager({"session": {"database_url": url}}) as m:
        s = m.create_session("x")
        s.add_message({"role": "user", "content": "hi"})
        m.save_session(s)
    assert (tmp_path / "custom.db").is_file()
    with SessionManager({"session": {"database_url": url}}) as m:
        assert m.load_session("x").get_messages()[0]["content"] == "hi"


# -- settings outside the [session] table ------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        pytest.param({"backend": "memory"}, id="backend"),
        pytest.param({"storage_path": "/srv/chats", "ui": {"theme": "dark"}}, id="path-and-ui"),
        pytest.param({"database_url": "sqlite+aiosqlite:////srv/chats.db"}, id="url"),
    ],
)
def test_settings_outside_the_session_table_are_rejected(config: dict[str, object]) -> None:
    with pytest.raises(InvalidConfigError) as info:
        SessionConfig.from_mapping(config)
    message = str(info.value)
    assert "settings must be inside the 'session' table: {'session': {" in message
    assert next(iter(config)) in message


@pytest.mark.parametrize("wrapper", ["sesion", "sessions", "Session", "SESSION", "sessoin"])
def test_misspelt_session_table_is_rejected(wrapper: str) -> None:
    with pytest.raises(InvalidConfigError) as info:
        SessionConfig.from_mapping({wrapper: {"backend": "memory"}})
    assert "did you mean 'session'?" in str(info.value)
    assert repr(wrapper) in str(info.value)


@pytest.mark.parametrize(
    "config",
    [
        pytest.param(None, id="none"),
        pytest.param({}, id="empty"),
        pytest.param({"ui": {"theme": "dark"}}, id="ui"),
        pytest.param({"version": {"major": 1}, "llm": {"model": "x"}}, id="version-llm"),
        pytest.param({"permission": {"mode": "ask"}, "sessions_ui": {}}, id="lookalikes"),
    ],
)
def test_other_top_level_sections_still_give_the_defaults(config: dict[str, object] | None) -> None:
    assert SessionConfig.from_mapping(config) == SessionConfig()


def test_toml_settings_outside_the_session_table(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('backend = "memory"\n')
    with pytest.raises(InvalidConfigError, match="inside the 'session' table"):
        SessionConfig.from_toml(f)
    f.write_text('[sesion]\nbackend = "memory"\n')
    with pytest.raises(InvalidConfigError, match="did you mean 'session'"):
        SessionConfig.from_toml(f)
    f.write_text('[ui]\ntheme = "dark"\n[session]\nbackend = "memory"\n')
    assert SessionConfig.from_toml(f).backend == "memory"


# -- direct construction -------------------------------------------------------------------


def test_direct_construction_raises_invalid_config_error() -> None:
    expected = "session.bogus: Extra inputs are not permitted (got 1)"
    builds: tuple[Callable[[], object], ...] = (
        lambda: SessionConfig(bogus=1),  # type: ignore[call-arg]
        lambda: SessionConfig.model_validate({"bogus": 1}),
        lambda: SessionConfig.model_validate_json('{"bogus": 1}'),
        lambda: SessionConfig.from_mapping({"session": {"bogus": 1}}),
    )
    for build in builds:
        with pytest.raises(InvalidConfigError) as info:
            build()
        assert expected in str(info.value)
        assert "valid keys: backend, storage_path, database_url" in str(info.value)
    with pytest.raises(InvalidConfigError, match=r"session\.connection_pool_size"):
        SessionConfig(connection_pool_size=0)
    with pytest.raises(InvalidConfigError, match=r"session\.backend"):
        SessionConfig.model_validate({"backend": "redis"})


def test_model_copy_update_still_works(tmp_path: Path) -> None:
    c = SessionConfig(storage_path=tmp_path)
    copy = c.model_copy(update={"autosave_interval": 0, "message_cache_size": 0})
    assert (copy.autosave_interval, copy.message_cache_size) == (0, 0)
    assert copy.storage_path == tmp_path and c.autosave_interval == 300


# -- database_url drivers --------------------------------------------------------------------


def test_postgresql_without_asyncpg_names_the_extra() -> None:
    # a fresh interpreter in which asyncpg cannot be imported (as without the extra)
    code = (
        "import sys; sys.modules['asyncpg'] = None\n"
        "from coda_session import SessionConfig, InvalidConfigError\n"
        "try:\n"
        "    SessionConfig(database_url='postgresql+asyncpg://u@127.0.0.1/db')\n"
        "except InvalidConfigError as exc:\n"
        "    print(exc)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "session.database_url" in run.stdout
    assert "no module 'asyncpg'" in run.stdout
    assert 'pip install "coda-session[postgresql]"' in run.stdout


@pytest.mark.parametrize(
    "url", ["mysql+aiomysql://u@127.0.0.1/db", "mysql+pymysql://u@127.0.0.1/db", "mssql://h/db"]
)
def test_unsupported_database_is_rejected_at_construction(url: str) -> None:
    with pytest.raises(InvalidConfigError) as info:
        SessionConfig.from_mapping({"session": {"database_url": url}})
    assert "session.database_url" in str(info.value)
    assert "is not a supported database" in str(info.value)
    assert "postgresql+asyncpg://" in str(info.value)


@pytest.mark.parametrize(
    ("url", "async_form"),
    [
        ("sqlite:///x.db", "sqlite+aiosqlite://"),
        ("sqlite+pysqlite:////tmp/x.db", "sqlite+aiosqlite://"),
    ],
)
def test_sync_driver_is_rejected_naming_the_async_form(url: str, async_form: str) -> None:
    with pytest.raises(InvalidConfigError) as info:
        SessionConfig.from_mapping({"session": {"database_url": url}})
    assert "session.database_url" in str(info.value)
    assert "not an async driver" in str(info.value)
    assert async_form in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u@127.0.0.1/db",
        "postgresql+psycopg2://u@127.0.0.1/db",
        "postgresql+psycopg://u@127.0.0.1/db",
    ],
)
def test_postgresql_needs_the_asyncpg_driver(url: str) -> None:
    with pytest.raises(InvalidConfigError, match=r"use postgresql\+asyncpg://"):
        SessionConfig(database_url=url)


def test_postgresql_backend_comes_from_the_url_and_round_trips() -> None:
    url = "postgresql+asyncpg://u:p@127.0.0.1:5432/db"
    c = SessionConfig.from_mapping({"session": {"database_url": url}})
    assert c.backend == "postgresql" and c.database_file is None
    assert SessionConfig.model_validate(c.model_dump()) == c
    assert SessionConfig.model_validate_json(c.model_dump_json()) == c
    explicit = SessionConfig.from_mapping(
        {"session": {"backend": "postgresql", "database_url": url}}
    )
    assert explicit == c
    with pytest.raises(InvalidConfigError, match="does not match the database_url"):
        SessionConfig.from_mapping({"session": {"backend": "sqlite", "database_url": url}})
    with pytest.raises(InvalidConfigError, match="backend 'postgresql' needs a database_url"):
        SessionConfig.from_mapping({"session": {"backend": "postgresql"}})
    with pytest.raises(InvalidConfigError, match="does not match the database_url"):
        SessionConfig.from_mapping(
            {"session": {"backend": "postgresql", "database_url": "sqlite+aiosqlite:///x.db"}}
        )


def test_default_postgresql_driver_is_checked_as_the_async_engine_picks_it() -> None:
    # SQLAlchemy 2.1 gives postgresql:// psycopg's async dialect, 2.0 psycopg2 (sync only)
    with pytest.raises(InvalidConfigError) as info:
        SessionConfig(database_url="postgresql://u@127.0.0.1/db")
    message = str(info.value)
    assert "session.database_url" in message
    assert "pip install psycopg" in message or "use postgresql+asyncpg://" in message


@pytest.mark.parametrize("url", ["foo://", "foo+bar://u@h/db", "sqlite+nodriver:///x.db"])
def test_unknown_dialect_is_rejected(url: str) -> None:
    with pytest.raises(
        InvalidConfigError, match=r"session\.database_url: unknown database dialect"
    ):
        SessionConfig.from_mapping({"session": {"database_url": url}})


def test_installed_async_driver_is_accepted(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    assert SessionConfig(database_url=url).database_url == url
    assert SessionConfig(database_url="sqlite+aiosqlite://").database_url == "sqlite+aiosqlite://"


# -- storage_path is a directory ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["chats.db", "chats.sqlite", "chats.sqlite3", "chats.DB"])
def test_storage_path_named_like_a_database_file_is_rejected(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    with pytest.raises(InvalidConfigError) as info:
        SessionConfig.from_mapping({"session": {"storage_path": str(path)}})
    message = str(info.value)
    assert f"storage_path is a directory (the database is {path}/sessions.db)" in message
    assert f"use database_url = 'sqlite+aiosqlite:///{path}' for a file" in message
    assert not path.exists()


def test_storage_path_that_is_a_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "chats"
    path.write_bytes(b"")
    with pytest.raises(InvalidConfigError, match="storage_path is a directory"):
        SessionConfig(storage_path=path)
    assert path.read_bytes() == b""


def test_storage_path_directories_are_fine(tmp_path: Path) -> None:
    (tmp_path / "existing").mkdir()
    (tmp_path / "old.db").mkdir()  # a directory an earlier version created stays usable
    paths = [tmp_path / "existing", tmp_path / "old.db", tmp_path / "chats.d", tmp_path / "v1.dbx"]
    for path in paths:
        assert SessionConfig(storage_path=path).storage_path == path


# -- round trip ---------------------------------------------------------------------------


def test_a_dumped_config_round_trips(tmp_path: Path) -> None:
    configs = [
        SessionConfig(),
        SessionConfig.from_mapping({"session": {"storage_path": str(tmp_path), "busy_timeout": 1}}),
        SessionConfig.from_mapping(
            {"session": {"database_url": f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"}}
        ),
        SessionConfig.from_mapping({"session": {"backend": "memory", "autosave_interval": 0}}),
    ]
    for c in configs:
        assert SessionConfig.model_validate(c.model_dump()) == c
        assert SessionConfig.model_validate(c.model_dump(mode="json")) == c
        assert SessionConfig.model_validate_json(c.model_dump_json()) == c
        assert SessionConfig.from_mapping({"session": c.model_dump(mode="json")}) == c


def test_storage_path_and_database_url_together_are_still_rejected(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfigError, match="not both"):
        SessionConfig.from_mapping(
            {
                "session": {
                    "storage_path": str(tmp_path),
                    "database_url": f"sqlite+aiosqlite:///{tmp_path / 'x.db'}",
                }
            }
        )
