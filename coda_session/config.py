"""The validated configuration of a session manager, from a dict or a TOML file."""

from __future__ import annotations

import difflib
import importlib
import os
import pkgutil
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from .errors import InvalidConfigError

__all__ = ["DATABASE_FILENAME", "SessionConfig"]

#: The SQLite database file inside ``storage_path``.
DATABASE_FILENAME = "sessions.db"

_DEFAULT_STORAGE_PATH = Path("~/.coda/sessions")
#: The databases the SQL backend runs on (SQLAlchemy backend names).
_SUPPORTED = ("sqlite", "postgresql")
#: What installs a database's driver: the requirement of the package extra of the same
#: name in pyproject.toml (tests/test_config.py keeps the two equal). The extra itself
#: (``coda-session[postgresql]``) works only from a checkout, the package not being on PyPI.
DRIVER_REQUIREMENTS = {"postgresql": "asyncpg>=0.29,<0.33"}
#: Upper bounds beyond which a setting cannot work (not merely looks odd): a timer of more
#: than a year, a session limit past what a 64-bit byte count holds comfortably (1 PB).
MAX_AUTOSAVE_INTERVAL = 365 * 24 * 3600
MAX_SESSION_SIZE_MB = 10**9
#: Names that say "a database file": as a storage_path (a directory) they are a mistake.
_DATABASE_FILE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


class SessionConfig(BaseModel):
    """The ``[session]`` configuration. Frozen; every field is validated.

    Build it with :meth:`from_mapping` (the spec's ``{"session": {...}}`` dict) or
    :meth:`from_toml` (a TOML file with a ``[session]`` table); unknown keys, wrong types and
    impossible values raise :class:`~coda_session.InvalidConfigError` naming the key, and so
    do ``SessionConfig(...)`` and :meth:`model_validate`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, validate_default=True)

    backend: Literal["sqlite", "postgresql", "memory"] = "sqlite"
    """Storage backend: ``"sqlite"`` (default, durable, one file), ``"postgresql"`` (a
    server, given by ``database_url``) or ``"memory"`` (one store per manager, lost when it
    closes). With a ``database_url`` and no ``backend``, the backend is the URL's database."""
    storage_path: Path = _DEFAULT_STORAGE_PATH
    """Directory of the SQLite database (``~`` and ``~user`` are expanded); created 0700 if
    missing."""
    database_url: str | None = None
    """An explicit SQLAlchemy *async* URL (``sqlite+aiosqlite:////abs/path.db``, or
    ``postgresql+asyncpg://user:password@host:5432/dbname``); replaces ``storage_path``."""
    connection_pool_size: int = Field(default=5, ge=1, le=1000)
    """Connections kept open (SQLite: per manager, its reader connections; PostgreSQL:
    the connection pool's size per event loop, also the most operations in flight at once
    on that loop)."""
    connect_timeout: float = Field(default=10.0, gt=0, le=3600, allow_inf_nan=False)
    """Seconds to wait for a database server to accept a connection (PostgreSQL) before
    failing with StorageError; unused by SQLite and memory."""
    autosave_interval: float = Field(
        default=300, ge=0, le=MAX_AUTOSAVE_INTERVAL, allow_inf_nan=False
    )
    """Seconds between background flushes of unsaved sessions (0 = off; at most a year)."""
    max_session_size: float = Field(default=100, gt=0, le=MAX_SESSION_SIZE_MB, allow_inf_nan=False)
    """Largest stored size of one session, in MB (10**6 bytes; at most 10**9, 1 PB)."""
    compress_messages: bool = True
    """Compress large message contents in storage."""
    message_cache_size: int = Field(default=1000, ge=0)
    """The most saved messages kept in memory per session object."""
    index_in_background: bool = True
    """Write the search index of saved messages from a background thread of the manager,
    right after each save commits, instead of inside the save's transaction (SQLite and
    PostgreSQL; a search finds messages not indexed yet all the same)."""
    busy_timeout: float = Field(default=5.0, ge=0, le=3600, allow_inf_nan=False)
    """Seconds a write waits for another writer's lock before giving up (SQLite: the
    busy timeout; PostgreSQL: ``lock_timeout``); such a write is tried up to 3 times."""

    if not TYPE_CHECKING:
        # (hidden from mypy, so the pydantic plugin still types the keyword arguments)
        def __init__(self, /, **data: Any) -> None:
            try:
                super().__init__(**data)
            except ValidationError as exc:
                raise _config_error(exc) from None

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Self:
        """Validate a dict of settings (no ``"session"`` wrapper); raises InvalidConfigError."""
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as exc:
            raise _config_error(exc) from None

    @classmethod
    def model_validate_json(cls, json_data: str | bytes | bytearray, **kwargs: Any) -> Self:
        """Validate a JSON object of settings; raises InvalidConfigError."""
        try:
            return super().model_validate_json(json_data, **kwargs)
        except ValidationError as exc:
            raise _config_error(exc) from None

    @field_validator("storage_path", mode="before")
    @classmethod
    def _path(cls, value: object) -> object:
        if isinstance(value, str):
            if not value or "\x00" in value:
                raise ValueError("must be a non-empty path without NUL characters")
            return Path(value)
        return value

    @field_validator("storage_path")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return expand_user(value)

    @model_validator(mode="before")
    @classmethod
    def _backend_of_url(cls, data: Any) -> Any:
        # a database_url without a backend names its backend itself (postgresql://... is
        # backend "postgresql"); an explicit backend that contradicts the URL is refused below
        if isinstance(data, Mapping) and "backend" not in data:
            url = data.get("database_url")
            if isinstance(url, str):
                try:
                    name = make_url(url).get_backend_name()
                except (ArgumentError, ValueError):
                    return data  # the field's own check says why
                if name in ("sqlite", "postgresql"):
                    return {**data, "backend": name}
        return data

    @field_validator(
        "autosave_interval", "max_session_size", "busy_timeout", "connect_timeout", mode="before"
    )
    @classmethod
    def _number(cls, value: object, info: ValidationInfo) -> object:
        # strict mode would refuse an int for a float field; bool is never a number here
        expected = _EXPECTED.get(info.field_name or "", "a number")
        if isinstance(value, bool):
            raise ValueError(f"must be a number, not a boolean; give {expected}")
        if isinstance(value, int):
            try:
                return float(value)
            except OverflowError:  # 10**400: no float holds it
                raise ValueError(
                    f"is too large for a number of this kind; give {expected}"
                ) from None
        return value

    @field_validator("database_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            url = make_url(value)
            port = url.port
        except (ArgumentError, ValueError) as exc:
            # a port that is no number ("host:abc") fails SQLAlchemy's int() as ValueError
            raise ValueError(
                f"not a database URL ({exc}): write it as "
                "'postgresql+asyncpg://user:password@host:5432/dbname' or "
                "'sqlite+aiosqlite:////absolute/path/sessions.db'"
            ) from None
        if port is not None and not 0 < port < 65536:
            # asyncpg would take the port modulo 65536 and connect somewhere else
            raise ValueError(
                f"port {port} is not a TCP port (1-65535): give the server's port, "
                "PostgreSQL's default being 5432"
            )
        backend = url.get_backend_name()
        if backend not in _SUPPORTED and _is_known_dialect(url):
            raise ValueError(
                f"{url.drivername}:// is not a supported database: coda_session runs on "
                "SQLite (sqlite+aiosqlite://) and PostgreSQL (postgresql+asyncpg://)"
            )
        if backend == "postgresql" and url.get_driver_name() != "asyncpg":
            # the default postgresql:// driver is psycopg2 (sync) or psycopg (SQLAlchemy 2.1)
            raise ValueError(
                f"{url.drivername}:// is not the PostgreSQL driver coda_session uses: "
                "use postgresql+asyncpg://"
            )
        # the dialect create_async_engine would pick (hence _is_async), loaded by SQLAlchemy
        try:
            dialect = url.get_dialect(_is_async=True)
        except (ArgumentError, ImportError, AttributeError):
            raise ValueError(
                f"unknown database dialect {url.drivername + '://'!r}: use "
                "sqlite+aiosqlite:// or postgresql+asyncpg://"
            ) from None
        if not dialect.is_async:
            forms = _async_forms(url.get_backend_name())
            hint = f"use {' or '.join(forms)}" if forms else "use an async driver"
            raise ValueError(f"{url.drivername}:// is not an async driver; {hint}")
        try:
            dialect.import_dbapi()
        except ImportError as exc:
            module = exc.name or url.get_driver_name()
            requirement = DRIVER_REQUIREMENTS.get(url.get_backend_name())
            hint = (
                f'pip install "{requirement}" (or, in a checkout of coda_session, '
                f'pip install -e ".[{url.get_backend_name()}]")'
                if requirement
                else f"pip install {module}"
            )
            raise ValueError(
                f"the driver of {url.drivername}:// is not installed: no module {module!r}; {hint}"
            ) from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SessionConfig:
        if self.database_url is not None:
            if self.backend == "memory":
                raise ValueError(
                    "database_url cannot be combined with backend 'memory': leave out "
                    "database_url for memory, or backend for the database it names"
                )
            url = make_url(self.database_url)
            named = url.get_backend_name()
            if named == "sqlite" and _is_a_directory(url.database):
                raise ValueError(
                    f"database_url names the directory {url.database}, not a database file: "
                    f"give a file in it (sqlite+aiosqlite:///{url.database}/sessions.db), or "
                    f"storage_path = {url.database!r} instead of database_url"
                )
            if named != self.backend:
                raise ValueError(
                    f"backend {self.backend!r} does not match the database_url, which is a "
                    f"{named} URL: set backend = {named!r} (or leave backend out)"
                )
            # the default counts as unset, so that a dumped config validates again
            if self.storage_path != expand_user(_DEFAULT_STORAGE_PATH):
                raise ValueError(
                    "give either storage_path or database_url, not both: storage_path is the "
                    f"directory of a {DATABASE_FILENAME}, database_url names the database itself"
                )
        elif self.backend == "postgresql":
            raise ValueError(
                "backend 'postgresql' needs a database_url, e.g. "
                "'postgresql+asyncpg://user:password@localhost:5432/dbname'"
            )
        elif self.backend == "sqlite":
            problem = _not_a_directory(self.storage_path)
            if problem:
                path = self.storage_path
                raise ValueError(
                    f"storage_path is the directory that holds {DATABASE_FILENAME}, but "
                    f"{path} {problem}: give a directory (the database is then "
                    f"{path / DATABASE_FILENAME}), or for a database file of your choosing "
                    f"database_url = 'sqlite+aiosqlite:///{path.absolute()}'"
                )
        return self

    @property
    def max_session_bytes(self) -> int:
        """``max_session_size`` in bytes (MB are 10**6 bytes)."""
        return int(self.max_session_size * 1_000_000)

    @property
    def database_file(self) -> Path | None:
        """The SQLite file the default backend uses, or None (memory or explicit URL)."""
        if self.backend != "sqlite" or self.database_url is not None:
            return None
        return self.storage_path / DATABASE_FILENAME

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any] | SessionConfig | None = None) -> SessionConfig:
        """Validate the spec's ``{"session": {...}}`` dict.

        Other top-level sections are ignored (they belong to the rest of the application);
        ``None`` or a dict without ``"session"`` gives the defaults. Without a ``"session"``
        table, a top-level setting (``{"backend": ...}``) or a near miss of ``"session"``
        (``"sesion"``, ``"Session"``) is a mistake and raises InvalidConfigError.
        """
        if isinstance(config, SessionConfig):
            return config
        if config is None:
            return cls()
        if not isinstance(config, Mapping):
            raise InvalidConfigError(
                f"config must be a mapping like {{'session': {{...}}}}, not {type(config).__name__}"
            )
        if "session" not in config:
            _check_no_session_table(config)
        section = config.get("session", {})
        if not isinstance(section, Mapping):
            raise InvalidConfigError(
                f"config key 'session' must be a table of settings, not {type(section).__name__}"
            )
        return cls._validate_section(section)

    @classmethod
    def from_toml(cls, path: str | Path) -> SessionConfig:
        """Read the ``[session]`` table of a TOML file."""
        try:
            with open(os.path.expanduser(path), "rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise InvalidConfigError(f"cannot read config file {path}: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise InvalidConfigError(f"config file {path} is not valid TOML: {exc}") from exc
        return cls.from_mapping(data)

    @classmethod
    def _validate_section(cls, section: Mapping[str, Any]) -> SessionConfig:
        return cls.model_validate(dict(section))


def _config_error(exc: ValidationError) -> InvalidConfigError:
    """pydantic's errors as one message naming each key: ``session.<key>: <problem>``."""
    for err in exc.errors():
        inner = err.get("ctx", {}).get("error")
        if isinstance(inner, InvalidConfigError):
            # model_validate runs __init__, which already turned the errors into this one
            return inner
    return InvalidConfigError("invalid configuration: " + "; ".join(map(_problem, exc.errors())))


#: What to give instead, for a key whose value is out of range or of the wrong type.
_EXPECTED = {
    "backend": "one of 'sqlite', 'postgresql', 'memory'",
    "storage_path": "a directory path as a string, e.g. '~/.coda/sessions'",
    "database_url": "a URL string, e.g. 'postgresql+asyncpg://user:password@host:5432/dbname'",
    "connection_pool_size": "a whole number from 1 to 1000",
    "connect_timeout": "seconds, more than 0 and at most 3600",
    "autosave_interval": f"seconds from 0 (autosave off) to {MAX_AUTOSAVE_INTERVAL:,} (a year)",
    "max_session_size": f"MB, more than 0 and at most {MAX_SESSION_SIZE_MB:,} (1 PB)",
    "compress_messages": "true or false",
    "message_cache_size": "a whole number of messages, 0 or more",
    "index_in_background": "true or false",
    "busy_timeout": "seconds from 0 to 3600",
}

#: Names people reach for that mean one of the keys (difflib would guess wrong for some:
#: lock_timeout is nearest connect_timeout, but it is what busy_timeout sets on PostgreSQL).
_ALIASES = {
    "lock_timeout": "busy_timeout",
    "busy": "busy_timeout",
    "timeout": "busy_timeout",
    "url": "database_url",
    "dsn": "database_url",
    "database": "database_url",
    "db": "database_url",
    "path": "storage_path",
    "dir": "storage_path",
    "directory": "storage_path",
    "pool": "connection_pool_size",
    "pool_size": "connection_pool_size",
    "compression": "compress_messages",
    "compress": "compress_messages",
    "cache": "message_cache_size",
    "autosave": "autosave_interval",
    "max_size": "max_session_size",
    "type": "backend",
    "engine": "backend",
}


def _problem(err: ErrorDetails) -> str:
    key = ".".join(str(part) for part in err["loc"])
    message = err["msg"]
    if err["type"] == "is_instance_of":  # "an instance of Path": a config file gives a string
        message = "must be a string"
    if err["type"] == "value_error" and "ctx" in err:
        message = str(err["ctx"]["error"])  # without pydantic's "Value error, " prefix
    if not key:  # a check across keys: its input is the whole table
        return f"session: {message}"
    shown = repr(err.get("input"))
    if len(shown) > 60:
        shown = shown[:57] + "..."
    if err["type"] == "extra_forbidden":
        fields = list(SessionConfig.model_fields)
        close = _ALIASES.get(key.lower()) or next(
            iter(difflib.get_close_matches(key.lower(), fields, n=1, cutoff=0.75)), None
        )
        hint = f"did you mean {close!r}? " if close else ""
        return f"session.{key}: unknown key (got {shown}); {hint}valid keys: {', '.join(fields)}"
    problem = f"session.{key}: {message} (got {shown})"
    expected = _EXPECTED.get(key)
    if expected and err["type"] != "value_error":  # our own messages say what to do
        problem += f"; give {expected}"
    return problem


def _check_no_session_table(config: Mapping[Any, Any]) -> None:
    """A config without ``"session"``: refuse what was meant as session settings."""
    keys = [key for key in config if isinstance(key, str)]
    settings = [key for key in keys if key in SessionConfig.model_fields]
    if settings:
        named = ", ".join(map(repr, settings))
        example = ", ".join(f"{key!r}: ..." for key in settings)
        raise InvalidConfigError(
            f"invalid configuration: session settings at the top level of the config: {named}; "
            f"settings must be inside the 'session' table: {{'session': {{{example}}}}}"
        )
    for key in keys:
        if isinstance(config[key], Mapping) and difflib.get_close_matches(
            key.lower(), ["session"], n=1, cutoff=0.8
        ):
            raise InvalidConfigError(
                f"invalid configuration: the config has no 'session' table but a {key!r} "
                "table: did you mean 'session'?"
            )


def expand_user(path: Path) -> Path:
    """``~`` and ``~user`` expanded as :func:`os.path.expanduser` does; ValueError (not
    pathlib's RuntimeError) when there is no such user or no home directory."""
    text = str(path)
    if not text.startswith("~"):
        return path
    expanded = os.path.expanduser(text)
    if expanded.startswith("~"):  # left as it was: nothing to expand it to
        head = text.split(os.sep, 1)[0]
        whose = (
            f"there is no user {head[1:]!r} on this system"
            if head != "~"
            else "this process has no home directory (HOME is not set)"
        )
        raise ValueError(
            f"cannot expand {head!r}: {whose}; give an absolute path, or ./{text} for a "
            "directory of that name in the current directory"
        )
    return Path(expanded)


def _not_a_directory(path: Path) -> str:
    """Why a storage_path cannot be the directory of the database ("" when it can be).

    One ``stat``: another process may create the directory at any moment (several starting
    together on a new path), and a second look (is it a directory? then: does it exist?)
    would mistake the directory it just made for a file.
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if path.suffix.lower() in _DATABASE_FILE_SUFFIXES:
            return "is named like a database file"
        return ""
    except OSError:
        return ""  # cannot look (a parent that is a file, no permission): opening says why
    if stat.S_ISDIR(mode):
        return ""  # also a directory named x.db that an earlier version created
    return "is a file" if stat.S_ISREG(mode) else "exists and is not a directory"


def _is_a_directory(database: str | None) -> bool:
    """Whether a SQLite URL's database is an existing directory (one ``stat``, as above)."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return False
    try:
        return stat.S_ISDIR(os.stat(database).st_mode)
    except OSError:
        return False  # missing (created on open) or cannot look: opening says why


def _is_known_dialect(url: Any) -> bool:
    """Whether SQLAlchemy ships a dialect of this URL's database (else: unknown dialect)."""
    try:
        importlib.import_module(f"sqlalchemy.dialects.{url.get_backend_name()}")
    except ImportError:
        return False
    return True


def _async_forms(backend: str) -> list[str]:
    """``backend+driver://`` for each async driver SQLAlchemy ships for ``backend``."""
    try:
        package = importlib.import_module(f"sqlalchemy.dialects.{backend}")
    except ImportError:
        return []
    forms = []
    for module in pkgutil.iter_modules(getattr(package, "__path__", [])):
        try:
            dialect = make_url(f"{backend}+{module.name}://").get_dialect(_is_async=True)
        except (ArgumentError, ImportError, AttributeError):
            continue  # a module that is not a driver
        if dialect.is_async and dialect.driver == module.name:
            forms.append(f"{backend}+{module.name}://")
    return forms
