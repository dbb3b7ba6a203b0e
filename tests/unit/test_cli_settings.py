"""The CLI finds the ``make run`` stack by itself (``var/local.env``), and bad input is one line, never a traceback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from producer import cli
from producer.cli.api_client import resolve_target
from producer.cli.people import parse_param
from shared.config import get_settings
from tests.support import SIGNING_KEY, WEBHOOK_SECRET


@pytest.fixture
def local_stack_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory as ``make run`` leaves it: ``var/local.env`` with the generated key and secrets."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "local.env").write_text(
        f"IMAGEJOBS_API_KEYS=sk-local-first-0123456789,sk-local-second-0123456789\nIMAGEJOBS_SIGNING_KEY={SIGNING_KEY}\n"
        f"IMAGEJOBS_WEBHOOKS__SECRET={WEBHOOK_SECRET}\nIMAGEJOBS_FLOWER_PASSWORD=password-1\n"
    )
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_the_api_and_key_come_from_flags_then_env_then_local_env(local_stack_dir: Path) -> None:
    assert resolve_target(None, None, {}) == resolve_target("http://127.0.0.1:8000", "sk-local-first-0123456789", {})
    env = {"IMAGEJOBS_API_PORT": "8123", "IMAGEJOBS_API_KEY": "sk-env"}
    target = resolve_target(None, None, env)
    assert (target.base_url, target.api_key) == ("http://127.0.0.1:8123", "sk-env")
    target = resolve_target("https://api.example/", "sk-flag", env)
    assert (target.base_url, target.api_key) == ("https://api.example", "sk-flag")


def test_keys_list_works_after_make_run_without_any_setup(
    local_stack_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["migrate"]) == 0
    assert "var/imagejobs.db" in capsys.readouterr().out
    assert (local_stack_dir / "var" / "imagejobs.db").is_file()
    assert cli.main(["keys", "create", "--name", "mine"]) == 0
    capsys.readouterr()
    assert cli.main(["keys", "list"]) == 0
    assert "name='mine'" in capsys.readouterr().out


def test_bad_settings_and_bad_input_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # no var/local.env: no key anywhere
    get_settings.cache_clear()
    assert cli.main(["keys", "list"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("imagejobs: ") and err.count("\n") == 1 and "IMAGEJOBS_" in err
    assert cli.main(["jobs"]) == 2
    assert "no API key" in capsys.readouterr().err
    assert cli.main(["--api-url", "ftp://x", "--api-key", "k", "jobs"]) == 2
    assert "--api-url" in capsys.readouterr().err
    assert cli.main(["--api-key", "k", "submit", "m", "p", "--param", "novalue"]) == 2
    assert "NAME=VALUE" in capsys.readouterr().err
    assert cli.main(["--api-key", "k", "submit", "m", "p", "--image", "missing.png"]) == 2
    assert "missing.png" in capsys.readouterr().err


def test_params_are_json_when_they_parse_else_text() -> None:
    assert parse_param("n=2") == ("n", 2)
    assert parse_param("size=1024x1024") == ("size", "1024x1024")
    assert parse_param("flags=[1, 2]") == ("flags", [1, 2])
