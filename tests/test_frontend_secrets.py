"""Tracker secrets: environment first, then the user's secrets file; clear errors that never show a value."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from mipcandy.frontend.secrets import SecretError, read_secret, require_secret, secrets_file


@pytest.fixture
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("TRACKER_TOKEN", raising=False)
    return tmp_path / "config"


def write_secrets(text: str, mode: int = 0o600) -> Path:
    path = secrets_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    os.chmod(path, mode)
    return path


def test_the_file_lives_in_the_user_config_dir(config_home: Path) -> None:
    assert secrets_file() == config_home / "mipcandy" / "secrets.toml"


def test_the_environment_wins_over_the_file(config_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_secrets('[tracker]\ntoken = "from-file"\n')
    assert read_secret("tracker", "token", "TRACKER_TOKEN") == "from-file"
    monkeypatch.setenv("TRACKER_TOKEN", "from-env")
    assert read_secret("tracker", "token", "TRACKER_TOKEN") == "from-env"
    monkeypatch.setenv("TRACKER_TOKEN", "  ")  # set but blank: the file answers
    assert read_secret("tracker", "token", "TRACKER_TOKEN") == "from-file"


def test_a_missing_secret_names_both_places_to_put_it(config_home: Path) -> None:
    assert read_secret("tracker", "token", "TRACKER_TOKEN") is None
    with pytest.raises(SecretError, match=r"the token is not set: export TRACKER_TOKEN=\.\.\. or add `token = "
                                          r"\"\.\.\.\"` under \[tracker\] in .*secrets\.toml"):
        require_secret("tracker", "token", "TRACKER_TOKEN", what="the token")


def test_a_broken_file_is_named_without_showing_its_values(config_home: Path) -> None:
    path = write_secrets('[tracker]\ntoken = "s3cret\n')
    with pytest.raises(SecretError, match=f"the secrets file {path} is not valid TOML") as caught:
        read_secret("tracker", "token", "TRACKER_TOKEN")
    assert "s3cret" not in str(caught.value)
    write_secrets('[tracker]\ntoken = 42\n')
    with pytest.raises(SecretError, match=r"\[tracker\] token must be a non-empty string"):
        read_secret("tracker", "token", "TRACKER_TOKEN")


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_a_file_others_can_read_is_flagged(config_home: Path) -> None:
    path = write_secrets('[tracker]\ntoken = "x"\n', mode=0o644)
    with pytest.warns(UserWarning, match=f"chmod 600 {path}"):
        assert read_secret("tracker", "token", "TRACKER_TOKEN") == "x"
