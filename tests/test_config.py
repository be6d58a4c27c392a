"""Configuration: the spec's dict and TOML, defaults, and clear rejections."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from coda_session import AsyncSessionManager, InvalidConfigError, SessionConfig, SessionManager
from coda_session.config import DRIVER_REQUIREMENTS, MAX_AUTOSAVE_INTERVAL, MAX_SESSION_SIZE_MB
from tests.support import ROOT


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
    expected = "session.bogus: unknown key (got 1)"
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
    # what works outside a checkout (coda-session is not on PyPI), and inside one
    assert f'pip install "{DRIVER_REQUIREMENTS["postgresql"]}"' in run.stdout
    assert 'pip install -e ".[postgresql]"' in run.stdout
    assert "coda-session[" not in run.stdout


def test_the_driver_requirement_named_is_the_extras() -> None:
    with open(ROOT / "pyproject.toml", "rb") as fh:
        extras = tomllib.load(fh)["project"]["optional-dependencies"]
    for backend, requirement in DRIVER_REQUIREMENTS.items():
        assert extras[backend] == [requirement]


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
    assert f"storage_path is the directory that holds sessions.db, but {path} is named" in message
    assert f"give a directory (the database is then {path}/sessions.db)" in message
    assert f"database_url = 'sqlite+aiosqlite:///{path}'" in message
    assert message.count("invalid configuration") == 1
    assert not path.exists()


def test_storage_path_that_is_a_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "chats"
    path.write_bytes(b"")
    with pytest.raises(InvalidConfigError, match=f"but {path} is a file: give a directory"):
        SessionConfig(storage_path=path)
    assert path.read_bytes() == b""


def test_a_database_url_naming_a_directory_is_rejected(tmp_path: Path) -> None:
    """A directory given where the database file belongs is refused when the config is
    built (SQLite said "unable to open database file" on first use), naming both fixes."""
    with pytest.raises(InvalidConfigError) as info:
        SessionConfig(database_url=f"sqlite+aiosqlite:///{tmp_path}")
    message = str(info.value)
    assert f"database_url names the directory {tmp_path}, not a database file" in message
    assert f"storage_path = {str(tmp_path)!r}" in message
    assert list(tmp_path.iterdir()) == []


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


# -- processes starting together on a new storage_path -------------------------------------

STARTER = r"""
import os, sys, time
from pathlib import Path
from coda_session import SessionConfig, SessionManager

opener, base, rounds, others = sys.argv[1] == "opener", Path(sys.argv[2]), *map(int, sys.argv[3:])
me, errors, looks = os.getpid(), [], 0
for i in range(rounds):
    path = base / f"store{i}"
    config = {"session": {"storage_path": str(path), "autosave_interval": 0}}
    if opener:  # starts once the others are all checking the path it is about to create
        while len(list(base.glob(f"ready{i}-*"))) < others:
            time.sleep(0.0005)
    else:  # checks the path as a starting manager does, over and over while it appears
        (base / f"ready{i}-{me}").touch()
        while not path.is_dir():
            try:
                SessionConfig.from_mapping(config)
                looks += 1
            except Exception as exc:
                errors.append(f"round {i}: {type(exc).__name__}: {exc}")
                break
    try:
        with SessionManager(config) as manager:
            session = manager.create_session(f"from-{me}")
            session.add_message({"role": "user", "content": "hello"})
            manager.save_session(session)
    except Exception as exc:
        errors.append(f"round {i}: {type(exc).__name__}: {exc}")
print(looks, *errors, sep="\n")
"""


def test_processes_starting_together_on_a_new_storage_path(tmp_path: Path) -> None:
    """One process creates each new store while two others check its storage_path again
    and again, as managers starting at that moment do: no check mistakes the directory
    being created for a file, and every process then stores its session there, in a
    0700 directory and a 0600 file. (The check looked for a directory, then for any file:
    a directory made between the two looks was refused as "storage_path is a directory".)
    """
    rounds, others = 40, 2
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", STARTER, role, str(tmp_path), str(rounds), str(others)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for role in ["opener"] + ["checker"] * others
    ]
    outputs = [proc.communicate(timeout=600) for proc in procs]
    looked = 0
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        looks, *errors = out.splitlines()
        assert errors == []
        looked += int(looks)
    assert looked >= rounds  # the checkers did look while the stores were being created
    for i in range(rounds):
        store = tmp_path / f"store{i}"
        assert os.stat(store).st_mode & 0o777 == 0o700
        assert os.stat(store / "sessions.db").st_mode & 0o777 == 0o600
        names = {p.pid for p in procs}
        with SessionManager({"session": {"storage_path": str(store)}}) as m:
            assert {info.name for info in m.list_sessions()} == {f"from-{pid}" for pid in names}


# -- every rejection: typed, one prefix, says what to give -----------------------------------

# each invalid setting the config checks, and what its message tells the user to do
REMEDIES: list[tuple[dict[str, object], str]] = [
    ({"backend": "mysql"}, "give one of 'sqlite', 'postgresql', 'memory'"),
    ({"storage_path": ""}, "must be a non-empty path"),
    ({"storage_path": 5}, "must be a string (got 5); give a directory path"),
    ({"storage_path": "~coda-no-such-user-4f1c/x"}, "give an absolute path"),
    ({"database_url": "nope"}, "write it as 'postgresql+asyncpg://"),
    ({"database_url": "foo://u@h/db"}, "use sqlite+aiosqlite:// or postgresql+asyncpg://"),
    ({"database_url": "mysql+aiomysql://u@h/db"}, "runs on SQLite (sqlite+aiosqlite://)"),
    ({"database_url": "sqlite:////tmp/x.db"}, "use sqlite+aiosqlite://"),
    ({"database_url": "postgresql://u@h/db"}, "use postgresql+asyncpg://"),
    ({"database_url": "postgresql+asyncpg://u@h:99999/db"}, "give the server's port"),
    ({"database_url": "postgresql+asyncpg://u@h:0/db"}, "give the server's port"),
    ({"database_url": "postgresql+asyncpg://u@h:abc/db"}, "write it as 'postgresql+asyncpg://"),
    ({"backend": "memory", "database_url": "sqlite+aiosqlite:////tmp/x.db"}, "leave out"),
    ({"backend": "postgresql", "database_url": "sqlite+aiosqlite:////x"}, "set backend = 'sqlite'"),
    ({"backend": "postgresql"}, "needs a database_url, e.g. 'postgresql+asyncpg://"),
    ({"storage_path": "/tmp/a", "database_url": "sqlite+aiosqlite:////x"}, "not both"),
    ({"connection_pool_size": 0}, "give a whole number from 1 to 1000"),
    ({"connection_pool_size": 1.5}, "give a whole number from 1 to 1000"),
    ({"connect_timeout": 0}, "give seconds, more than 0 and at most 3600"),
    ({"connect_timeout": float("nan")}, "give seconds, more than 0 and at most 3600"),
    ({"autosave_interval": -1}, "give seconds from 0 (autosave off) to 31,536,000"),
    ({"autosave_interval": 1e300}, "give seconds from 0 (autosave off) to 31,536,000"),
    ({"autosave_interval": float("inf")}, "give seconds from 0 (autosave off)"),
    ({"autosave_interval": 10**400}, "give seconds from 0 (autosave off)"),
    ({"autosave_interval": True}, "not a boolean; give seconds"),
    ({"max_session_size": 0}, "give MB, more than 0 and at most 1,000,000,000"),
    ({"max_session_size": float("inf")}, "give MB, more than 0"),
    ({"max_session_size": float("nan")}, "give MB, more than 0"),
    ({"max_session_size": 10**400}, "give MB, more than 0"),
    ({"max_session_size": 1e400}, "give MB, more than 0"),
    ({"compress_messages": "yes"}, "give true or false"),
    ({"message_cache_size": -1}, "give a whole number of messages, 0 or more"),
    ({"busy_timeout": float("nan")}, "give seconds from 0 to 3600"),
    ({"busy_timeout": 10**6}, "give seconds from 0 to 3600"),
    ({"bakend": "sqlite"}, "unknown key (got 'sqlite'); did you mean 'backend'?"),
]


@pytest.mark.parametrize(("section", "remedy"), REMEDIES, ids=lambda v: repr(v)[:40])
def test_every_rejection_is_typed_and_says_what_to_give(
    section: dict[str, object], remedy: str
) -> None:
    """Every way in (the spec's dict, the model's own constructors) raises
    InvalidConfigError, prefixed once (model_validate runs __init__, whose error pydantic
    wrapped again: "invalid configuration: session: invalid configuration: ...")."""
    builds: list[Callable[[], object]] = [
        lambda: SessionConfig.from_mapping({"session": section}),
        lambda: SessionConfig.model_validate(section),
        lambda: SessionConfig(**section),  # type: ignore[arg-type]
    ]
    for build in builds:
        with pytest.raises(InvalidConfigError) as info:
            build()
        message = str(info.value)
        assert remedy in message
        assert message.startswith("invalid configuration: session")
        assert message.count("invalid configuration") == 1


@pytest.mark.parametrize(
    "section",
    [
        {"max_session_size": float("inf")},
        {"max_session_size": 10**400},
        {"autosave_interval": 1e300},
        {"autosave_interval": float("inf")},
        {"database_url": "postgresql+asyncpg://u@127.0.0.1:99999/db"},
        {"storage_path": "~coda-no-such-user-4f1c/x"},
    ],
    ids=lambda v: repr(v)[:40],
)
def test_bad_settings_fail_when_the_manager_is_built_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, section: dict[str, object]
) -> None:
    """These used to get through: an OverflowError (infinity, 10**400 MB), a RuntimeError
    (~user), a port taken modulo 65536 (99999 connected to 34463), and an autosave thread
    that died at its first wait (1e300 s overflows the timer)."""
    monkeypatch.chdir(tmp_path)  # where ~nosuchuser/x would have been taken literally
    storage = (
        {}
        if "database_url" in section or "storage_path" in section
        else {"storage_path": str(tmp_path / "s")}
    )
    config = {"session": {**storage, **section}}
    with pytest.raises(InvalidConfigError):
        SessionManager(config)
    with pytest.raises(InvalidConfigError):
        AsyncSessionManager(config)
    assert list(tmp_path.iterdir()) == []


def test_user_home_paths_expand_as_expanduser_does() -> None:
    home_of_root = os.path.expanduser("~root")
    if home_of_root == "~root":
        pytest.skip("this system has no user root")
    config = SessionConfig.from_mapping({"session": {"storage_path": "~root/chats"}})
    assert config.storage_path == Path(home_of_root) / "chats"
    with pytest.raises(InvalidConfigError, match="there is no user 'coda-no-such-user-4f1c'"):
        SessionConfig.from_mapping({"session": {"storage_path": "~coda-no-such-user-4f1c"}})


def test_the_longest_intervals_and_sizes_allowed_work(tmp_path: Path) -> None:
    """The upper bounds are usable values: the autosave timer waits a year, the limit is
    1 PB, and the manager saves as usual."""
    config = {
        "session": {
            "storage_path": str(tmp_path),
            "autosave_interval": MAX_AUTOSAVE_INTERVAL,
            "max_session_size": MAX_SESSION_SIZE_MB,
        }
    }
    with SessionManager(config) as m:
        s = m.create_session("chat")
        s.add_message({"role": "user", "content": "hi"})
        m.save_session(s)
    with SessionManager(config) as m:
        assert m.load_session("chat").get_messages()[0]["content"] == "hi"


@pytest.mark.parametrize(
    ("key", "meant"),
    [
        ("lock_timeout", "busy_timeout"),  # difflib said connect_timeout
        ("timeout", "busy_timeout"),
        ("url", "database_url"),
        ("path", "storage_path"),
        ("pool_size", "connection_pool_size"),
        ("compression", "compress_messages"),
        ("Backend", "backend"),
        ("stroage_path", "storage_path"),
    ],
)
def test_a_misspelt_key_suggests_the_key_meant(key: str, meant: str) -> None:
    with pytest.raises(InvalidConfigError, match=f"did you mean {meant!r}"):
        SessionConfig.from_mapping({"session": {key: 1}})


def test_a_key_like_no_setting_suggests_none() -> None:
    # max_messages is no setting; difflib's nearest was compress_messages
    with pytest.raises(InvalidConfigError) as info:
        SessionConfig.from_mapping({"session": {"max_messages": 50}})
    assert "did you mean" not in str(info.value)
    assert "valid keys: backend, storage_path" in str(info.value)


def test_each_memory_manager_is_a_store_of_its_own() -> None:
    """README: the memory backend keeps sessions per manager (it said "in the process",
    but two managers in one process never shared anything)."""
    config = {"session": {"backend": "memory", "autosave_interval": 0}}
    with SessionManager(config) as first, SessionManager(config) as second:
        s = first.create_session("chat")
        s.add_message({"role": "user", "content": "hi"})
        first.save_session(s)
        assert first.get_session_info("chat") is not None
        assert second.get_session_info("chat") is None
        assert second.list_sessions() == []
