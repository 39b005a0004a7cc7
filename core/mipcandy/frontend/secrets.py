"""Tracker secrets (API tokens) from environment variables or the user's own config file, and nowhere else.

The file is ``<user config dir>/mipcandy/secrets.toml`` (``$XDG_CONFIG_HOME`` or ``~/.config`` on Linux and macOS,
``%APPDATA%`` on Windows), one table per frontend::

    [notion]
    token = "secret_..."
    database_id = "..."

An environment variable wins over the file. Nothing here ever writes a secret, and errors name where a secret was
looked for, never its value.
"""
from __future__ import annotations

import os
import stat
import sys
import tomllib
import warnings
from pathlib import Path


class SecretError(RuntimeError):
    """A secret is missing or its file cannot be read."""


def user_config_dir() -> Path:
    """The folder for this user's mipcandy settings (not created)."""
    if sys.platform == "win32" and "XDG_CONFIG_HOME" not in os.environ:
        base = Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "mipcandy"


def secrets_file() -> Path:
    """Where :func:`read_secret` looks after the environment."""
    return user_config_dir() / "secrets.toml"


def _read_table(path: Path, section: str) -> dict[str, object]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as error:
        raise SecretError(f"cannot read the secrets file {path}: {error}") from None
    if os.name == "posix" and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        warnings.warn(f"{path} can be read by other users; restrict it with `chmod 600 {path}`", UserWarning,
                      stacklevel=4)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SecretError(f"the secrets file {path} is not valid TOML ({error}); fix or remove it") from None
    table = data.get(section, {})
    if not isinstance(table, dict):
        raise SecretError(f"in the secrets file {path}, [{section}] must be a table of key = \"value\" lines")
    return table


def read_secret(section: str, key: str, env: str) -> str | None:
    """The value of environment variable ``env`` if set and not empty, else ``key`` of table ``[section]`` in
    :func:`secrets_file`, else ``None``."""
    value = os.environ.get(env, "").strip()
    if value:
        return value
    path = secrets_file()
    found = _read_table(path, section).get(key)
    if found is None:
        return None
    if not isinstance(found, str) or not found.strip():
        raise SecretError(f"in the secrets file {path}, [{section}] {key} must be a non-empty string")
    return found.strip()


def require_secret(section: str, key: str, env: str, *, what: str) -> str:
    """:func:`read_secret`, or a :class:`SecretError` saying both places to put it."""
    value = read_secret(section, key, env)
    if value is None:
        raise SecretError(f"{what} is not set: export {env}=... or add `{key} = \"...\"` under [{section}] in "
                          f"{secrets_file()}")
    return value
