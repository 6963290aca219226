"""Every management command of this project explains itself with --help (argparse formats help text with %, so one
unescaped percent sign in a setting's help breaks it)."""
import pytest
from django.core.management import call_command, get_commands

OUR_APPS = {"feedback", "rl"}
COMMANDS = sorted(name for name, app in get_commands().items() if app in OUR_APPS)


def test_the_project_has_its_commands():
    assert {"train_dpo", "evaluate_model", "export_model", "gate_model", "online_learn"} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_prints_usage_and_exits_cleanly(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        call_command(command, "--help")
    assert exit_.value.code == 0
    usage = capsys.readouterr().out.splitlines()[0]
    assert usage.startswith("usage:") and command in usage


def test_a_percent_sign_in_a_setting_s_help_is_printed_as_one(capsys):
    from rl.core.config import OnlineLearningConfig, config_field_help

    assert "95% interval" in config_field_help(OnlineLearningConfig)["gate_fixture_margin"]
    with pytest.raises(SystemExit):
        call_command("gate_model", "--help")
    assert "95% interval" in " ".join(capsys.readouterr().out.split())
