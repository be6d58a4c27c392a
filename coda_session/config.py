"""The validated configuration of a session manager, from a dict or a TOML file."""

from __future__ import annotations

import difflib
import importlib
import pkgutil
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
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
#: The package extra that installs a database's driver.
_EXTRAS = {"postgresql": "postgresql"}
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
    server, given by ``database_url``) or ``"memory"`` (lost at exit). With a
    ``database_url`` and no ``backend``, the backend is the URL's database."""
    storage_path: Path = _DEFAULT_STORAGE_PATH
    """Directory of the SQLite database (``~`` is expanded); created 0700 if missing."""
    database_url: str | None = None
    """An explicit SQLAlchemy *async* URL (``sqlite+aiosqlite:////abs/path.db``, or
    ``postgresql+asyncpg://user:password@host:5432/dbname``); replaces ``storage_path``."""
    connection_pool_size: int = Field(default=5, ge=1, le=1000)
    """Connections kept open (SQLite: per manager, its reader connections; PostgreSQL:
    the connection pool's size per event loop, also the most operations in flight at once
    on that loop)."""
    connect_timeout: float = Field(default=10.0, gt=0, le=3600)
    """Seconds to wait for a database server to accept a connection (PostgreSQL) before
    failing with StorageError; unused by SQLite and memory."""
    autosave_interval: float = Field(default=300, ge=0)
    """Seconds between background flushes of unsaved sessions (0 = off)."""
    max_session_size: float = Field(default=100, gt=0)
    """Largest stored size of one session, in MB (10**6 bytes)."""
    compress_messages: bool = True
    """Compress large message contents in storage."""
    message_cache_size: int = Field(default=1000, ge=0)
    """The most saved messages kept in memory per session object."""
    busy_timeout: float = Field(default=5.0, ge=0, le=3600)
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
        return value.expanduser()

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
                except ArgumentError:
                    return data  # the field's own check says why
                if name in ("sqlite", "postgresql"):
                    return {**data, "backend": name}
        return data

    @field_validator(
        "autosave_interval", "max_session_size", "busy_timeout", "connect_timeout", mode="before"
    )
    @classmethod
    def _number(cls, value: object) -> object:
        # strict mode would refuse an int for a float field; bool is never a number here
        if isinstance(value, bool):
            raise ValueError("must be a number, not a boolean")
        if isinstance(value, int):
            return float(value)
        return value

    @field_validator("database_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            url = make_url(value)
        except ArgumentError as exc:
            raise ValueError(f"not a database URL: {exc}") from None
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
            raise ValueError(f"unknown database dialect {url.drivername + '://'!r}") from None
        if not dialect.is_async:
            forms = _async_forms(url.get_backend_name())
            hint = f"use {' or '.join(forms)}" if forms else "use an async driver"
            raise ValueError(f"{url.drivername}:// is not an async driver; {hint}")
        try:
            dialect.import_dbapi()
        except ImportError as exc:
            module = exc.name or url.get_driver_name()
            extra = _EXTRAS.get(url.get_backend_name())
            hint = f'pip install "coda-session[{extra}]"' if extra else f"pip install {module}"
            raise ValueError(
                f"the driver of {url.drivername}:// is not installed: no module {module!r}; {hint}"
            ) from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SessionConfig:
        if self.database_url is not None:
            if self.backend == "memory":
                raise ValueError("database_url cannot be combined with backend 'memory'")
            named = make_url(self.database_url).get_backend_name()
            if named != self.backend:
                raise ValueError(
                    f"backend {self.backend!r} does not match the database_url, which is a "
                    f"{named} URL: set backend = {named!r} (or leave backend out)"
                )
            # the default counts as unset, so that a dumped config validates again
            if self.storage_path != _DEFAULT_STORAGE_PATH.expanduser():
                raise ValueError("give either storage_path or database_url, not both")
        elif self.backend == "postgresql":
            raise ValueError(
                "backend 'postgresql' needs a database_url, e.g. "
                "'postgresql+asyncpg://user:password@localhost:5432/dbname'"
            )
        elif self.backend == "sqlite" and _not_a_directory(self.storage_path):
            path = self.storage_path
            raise ValueError(
                f"storage_path is a directory (the database is {path / DATABASE_FILENAME}); "
                f"use database_url = 'sqlite+aiosqlite:///{path.absolute()}' for a file"
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
            with open(Path(path).expanduser(), "rb") as fh:
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
    return InvalidConfigError("invalid configuration: " + "; ".join(map(_problem, exc.errors())))


def _problem(err: ErrorDetails) -> str:
    key = ".".join(str(part) for part in err["loc"])
    message = err["msg"]
    if err["type"] == "value_error" and "ctx" in err:
        message = str(err["ctx"]["error"])  # without pydantic's "Value error, " prefix
    if not key:  # a check across keys: its input is the whole table
        return f"session: {message}"
    shown = repr(err.get("input"))
    if len(shown) > 60:
        shown = shown[:57] + "..."
    problem = f"session.{key}: {message} (got {shown})"
    if err["type"] == "extra_forbidden":
        fields = list(SessionConfig.model_fields)
        close = difflib.get_close_matches(key, fields, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        problem += f"; {hint}valid keys: {', '.join(fields)}"
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


def _not_a_directory(path: Path) -> bool:
    """True for a storage_path that is, or is named like, a database file."""
    try:
        if path.is_dir():
            return False  # also a directory named x.db that an earlier version created
        if path.exists():
            return True
    except OSError:
        pass  # cannot look: opening the database will say why
    return path.suffix.lower() in _DATABASE_FILE_SUFFIXES


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
