import json
import subprocess
from pathlib import Path

import pytest

from rl.prompts import SYSTEM_PROMPT, Pick, PickParseError, ScenarioText, build_messages, parse_pick, render_pick
from tests.rl_cases import CATALOG

GOOD = '{"widget": "line_chart", "fixtures": ["chiller_1_kw"], "title": "Chiller 1"}'


def test_the_prompt_states_the_format_lists_the_catalog_and_asks_the_question():
    messages = build_messages(ScenarioText("How has chiller 1 power trended this week?", "HQ", "operator", "last 7 days"), CATALOG)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"] == SYSTEM_PROMPT
    user = messages[1]["content"]
    assert all(f"- {w.slug}: {w.description}" in user for w in CATALOG.widgets)
    assert "- chiller_1_kw: Electrical power of chiller 1, kW." in user
    assert user.endswith("Question: How has chiller 1 power trended this week?")
    assert "Site: HQ; Role: operator; Time: last 7 days" in user


def test_the_fixture_shortlist_keeps_the_fixtures_the_question_names():
    shortlist = CATALOG.fixture_shortlist("Which work orders are open?")
    assert len(shortlist) == CATALOG.shortlist_size
    assert "open_work_orders" in shortlist
    assert "chiller_2_kw" in CATALOG.fixture_shortlist("chiller 2 power")


def test_a_rendered_pick_parses_back_to_itself():
    pick = Pick("line_chart", ("outdoor_air_temp", "chiller_1_kw"), "Chiller vs outdoor")
    assert parse_pick(render_pick(pick), CATALOG) == pick
    assert json.loads(render_pick(pick)) == {"widget": "line_chart", "fixtures": ["chiller_1_kw", "outdoor_air_temp"], "title": "Chiller vs outdoor"}


@pytest.mark.parametrize("answer", [
    GOOD,
    f"Sure! Here is the pick:\n```json\n{GOOD}\n```\nHope it helps.",
    f"```\n{GOOD}\n```",
    f"I would show {GOOD} because it trends.",
])
def test_the_parser_tolerates_fences_and_prose(answer):
    assert parse_pick(answer, CATALOG) == Pick("line_chart", ("chiller_1_kw",), "Chiller 1")


@pytest.mark.parametrize("answer, reason", [
    ("I think a line chart", "no_json"),
    ('{"widget": "line_chart", "fixtures": ["chiller_1', "invalid_json"),
    ('{"widget": "hologram", "fixtures": ["chiller_1_kw"]}', "unknown_widget"),
    ('{"widget": "line_chart", "fixtures": ["boiler_9"]}', "unknown_fixture"),
    ('{"fixtures": ["chiller_1_kw"]}', "missing_widget"),
    ('{"widget": "line_chart", "fixtures": [3]}', "bad_fixtures"),
    ('{"widget": "line_chart", "fixtures": []}', "no_fixtures"),
    ("", "no_json"),
])
def test_the_parser_gives_a_clear_error_for_bad_answers(answer, reason):
    with pytest.raises(PickParseError) as error:
        parse_pick(answer, CATALOG)
    assert error.value.reason == reason


def test_only_rl_prompts_builds_the_task_prompt():
    root = Path(__file__).resolve().parent.parent
    hits = subprocess.run(
        ["git", "grep", "-l", "-e", "SYSTEM_PROMPT =", "-e", "Question: ", "--", "*.py", ":!tests/*"],
        cwd=root, capture_output=True, text=True,
    ).stdout.split()
    assert hits == ["rl/prompts.py"]
