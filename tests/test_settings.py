"""Configuration comes from the environment, flags override it, and --help lists it all."""

from __future__ import annotations

import pytest

from lambda_os import cli
from lambda_os.settings import OPTIONS, Settings, load


def test_defaults_serve_one_machine_with_the_in_memory_catalogue():
    settings = Settings.from_env({})
    assert settings.mongo_url is None
    assert (settings.api_host, settings.api_port) == ("127.0.0.1", 8080)
    assert settings.events_queue == "lambda.events"


def test_environment_variables_set_options_and_are_typed():
    settings = Settings.from_env(
        {"MONGO_URL": "mongodb://db:27017", "LAMBDA_OS_API_PORT": "9000", "DOCKER_HOST": ""}
    )
    assert settings.mongo_url == "mongodb://db:27017"
    assert settings.api_port == 9000
    assert settings.docker_host is None  # empty means unset


def test_flags_override_the_environment():
    args = cli.build_parser().parse_args(["api", "--api-port", "9100"])
    settings = load(args, {"LAMBDA_OS_API_PORT": "9000", "AMQP_URL": "amqp://x/"})
    assert settings.api_port == 9100
    assert settings.amqp_url == "amqp://x/"


@pytest.mark.parametrize("command", ["api", "listener", "standalone", "worker", "controller"])
def test_help_lists_every_option_with_its_environment_variable(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for option in OPTIONS:
        assert option.flag in text
        assert option.env in text


def test_the_readme_lists_every_option_with_its_flag():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    for option in OPTIONS:
        assert f"| `{option.env}` | `{option.flag}` |" in readme
