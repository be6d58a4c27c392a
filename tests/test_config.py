"""Configuration: the spec's dict and TOML, defaults, and clear rejections."""

from __future__ import annotations

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
