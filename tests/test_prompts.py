import json
import subprocess
import sys
from pathlib import Path

import pytest

from rl.core.prompts import (
    ANSWER_TOKEN_LIMIT, MAX_FIXTURES_PER_PICK, MAX_TITLE_CHARS, SYSTEM_PROMPT, Catalog, CatalogItem, Pick, PickParseError, ScenarioText, answer_schema, assistant_message, build_messages,
    decision_length, parse_pick, render_pick,
)
from tests.rl_cases import CATALOG

GOOD = '{"widget": "line_chart", "fixtures": ["chiller_1_kw"], "title": "Chiller 1"}'


def test_the_prompt_states_the_format_lists_the_catalog_and_asks_the_question():
    messages = build_messages(ScenarioText("How has chiller 1 power trended this week?", "HQ", "operator", "last 7 days"), CATALOG)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"] == SYSTEM_PROMPT
    user = messages[1]["content"]
    assert all(f"- {w.slug}: {w.description}" in user for w in CATALOG.widgets)
    assert "- chiller_1_kw: Electrical power of chiller 1, kW." in user
    assert user.endswith("\nQuestion: How has chiller 1 power trended this week?")
    # Said before the shortlist too, so each fixture's description is read after the question.
    assert user.index("Widgets:\n") < user.index("\nQuestion: How has chiller 1 power trended this week?\nFixtures:\n")
    assert "Site: HQ; Role: operator; Time: last 7 days" in user


def test_the_fixture_shortlist_keeps_the_fixtures_the_question_names():
    shortlist = CATALOG.fixture_shortlist("Which work orders are open?")
    assert len(shortlist) == CATALOG.shortlist_size
    assert "open_work_orders" in shortlist
    assert "chiller_2_kw" in CATALOG.fixture_shortlist("chiller 2 power")


def test_the_shortlist_puts_the_best_match_first_and_the_prompt_keeps_that_order():
    assert CATALOG.fixture_shortlist("outdoor air temperature and chiller power")[0] == "outdoor_air_temp"
    assert CATALOG.fixture_shortlist("Which work orders are open?")[0] == "open_work_orders"
    user = build_messages(ScenarioText("outdoor air temperature and chiller power"), CATALOG)[1]["content"]
    listed = [line[2:].split(":")[0] for line in user.split("Fixtures:\n")[1].splitlines() if line.startswith("- ")]
    assert listed == CATALOG.fixture_shortlist("outdoor air temperature and chiller power")


def test_a_rendered_pick_parses_back_to_itself():
    pick = Pick("line_chart", ("outdoor_air_temp", "chiller_1_kw"), "Chiller vs outdoor")
    assert parse_pick(render_pick(pick), CATALOG) == pick
    assert json.loads(render_pick(pick)) == {"widget": "line_chart", "fixtures": ["chiller_1_kw", "outdoor_air_temp"], "title": "Chiller vs outdoor"}


def test_an_answer_lists_its_fixtures_in_the_prompt_s_shortlist_order():
    scenario = ScenarioText("outdoor air temperature and chiller power")
    shortlist = CATALOG.shortlist_for(scenario)
    pick = Pick("line_chart", ("outdoor_air_temp", "chiller_1_kw"), "Chiller vs outdoor")
    assert shortlist.index("outdoor_air_temp") < shortlist.index("chiller_1_kw")  # the opposite of slug order
    answer = assistant_message(pick, scenario, CATALOG)[0]["content"]
    assert json.loads(answer)["fixtures"] == ["outdoor_air_temp", "chiller_1_kw"]
    assert parse_pick(answer, CATALOG) == pick
    # A fixture the shortlist does not hold (a rated pick can show one) comes after those it does.
    assert json.loads(render_pick(Pick("table", ("zzz", "chiller_1_kw")), ["chiller_1_kw"]))["fixtures"] == ["chiller_1_kw", "zzz"]


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
    assert hits == ["rl/core/prompts.py"]


SITED = Catalog(
    widgets=CATALOG.widgets,
    fixtures=(
        CatalogItem("hq_chiller_1_kw", "Chiller 1 power", "Electrical power of chiller 1, kW.", ("HQ",)),
        CatalogItem("rv_chiller_1_kw", "Chiller 1 power", "Electrical power of chiller 1, kW.", ("Riverside",)),
        CatalogItem("hq_open_work_orders", "Open work orders", "Maintenance work orders that are open.", ("HQ",)),
        CatalogItem("rv_open_work_orders", "Open work orders", "Maintenance work orders that are open.", ("Riverside",)),
        CatalogItem("outdoor_air_temp", "Outdoor air temperature", "Outdoor air temperature, degC."),
    ),
    shortlist_size=2,
)


def test_the_shortlist_offers_only_fixtures_of_the_scenario_s_site():
    assert SITED.fixture_shortlist("chiller 1 power", "HQ")[0] == "hq_chiller_1_kw"
    assert "rv_chiller_1_kw" in SITED.fixture_shortlist("chiller 1 power", "Riverside")
    assert not any(slug.startswith("rv_") for slug in SITED.fixture_shortlist("chiller 1 power", "HQ"))
    assert "outdoor_air_temp" in SITED.fixture_shortlist("outdoor temperature", "HQ")  # no sites: every site has it


def test_the_shortlist_matches_run_together_names_like_ahu2():
    catalog = Catalog(widgets=CATALOG.widgets, fixtures=(
        CatalogItem("ahu_2_sat", "AHU-2 supply air temperature", "Supply air temperature of AHU-2."),
        CatalogItem("ahu_3_sat", "AHU-3 supply air temperature", "Supply air temperature of AHU-3."),
        CatalogItem("lobby_rh", "Lobby humidity", "Relative humidity in the lobby."),
    ), shortlist_size=1)
    assert catalog.fixture_shortlist("what is AHU2 doing") == ["ahu_2_sat"]


def test_the_answer_schema_allows_catalog_widgets_and_only_the_prompt_s_shortlist():
    scenario = ScenarioText("chiller 1 power now", "HQ")
    schema = answer_schema(scenario, SITED)
    assert list(schema["properties"]) == ["widget", "fixtures", "title"] == schema["required"]
    assert schema["properties"]["widget"]["enum"] == sorted(w.slug for w in SITED.widgets)
    assert schema["properties"]["fixtures"]["items"]["enum"] == SITED.shortlist_for(scenario)
    assert schema["properties"]["fixtures"]["minItems"] == 1
    assert schema["additionalProperties"] is False


def test_the_decision_of_an_answer_ends_where_its_title_begins():
    answer = render_pick(Pick("gauge", ("hq_chiller_1_kw",), "Chiller 1, now"))
    assert answer[: decision_length(answer)] == '{"widget": "gauge", "fixtures": ["hq_chiller_1_kw"]'


FAKE_JAX_LAX = '''
import os
from pathlib import Path

import numpy as np

Path(os.environ["FAKE_JAX_RECORD"]).write_text(os.environ.get("JAX_PLATFORMS", "<unset>"))


def top_k(scores, k):
    order = np.argsort(-np.asarray(scores), kind="stable")[..., :k]
    return np.take_along_axis(np.asarray(scores), order, -1), order
'''


def test_building_a_shortlist_keeps_an_installed_jax_off_the_gpu(tmp_path):
    """bm25s imports JAX when it is installed and runs a top-k at import: on a GPU server with jax[cuda] that would
    preallocate most of the GPU's memory in the trainer's own process. A stand-in `jax` records which platforms JAX
    was allowed when bm25s imported it; the shortlist must come out as without it."""
    root = Path(__file__).resolve().parent.parent
    fake = tmp_path / "site" / "jax"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("from . import lax\n")
    (fake / "lax.py").write_text(FAKE_JAX_LAX)
    record = tmp_path / "platforms.txt"
    script = (
        "from tests.rl_cases import CATALOG\n"
        "print(','.join(CATALOG.fixture_shortlist('Which work orders are open?')))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{tmp_path / 'site'}:{root}", "FAKE_JAX_RECORD": str(record),
           "DJANGO_SETTINGS_MODULE": "backend.settings"}
    done = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert record.read_text() == "cpu"
    assert done.stdout.strip().split(",") == CATALOG.fixture_shortlist("Which work orders are open?")


def test_every_model_may_write_the_longest_answer_the_schema_allows():
    """Constrained decoding always ends in a valid answer unless the token limit cuts it first: the limit must hold
    three of the catalog's longest fixture ids, its longest widget id and a 60-character title at one token a
    character (in SmolLM2's tokens), for the demo's catalog and both natural sets'. At 96 the real base model's long
    titles were cut into invalid JSON."""
    from feedback.demo import build_demo
    from rl.core.base_model import load_tokenizer
    from rl.core.config import OnlineLearningConfig, ServingConfig
    from rl.evaluation.backends import DEFAULT_MAX_NEW_TOKENS

    tokenizer = load_tokenizer()

    def tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    data, _ratings = build_demo()
    catalogs = {"demo": ([w.slug for w in data.widgets], [f.slug for f in data.fixtures])}
    root = Path(__file__).resolve().parent.parent
    for name in ("natural", "natural-sealed"):
        natural = json.loads((root / "evalsets" / name / "exhaustive_data.json").read_text())
        catalogs[name] = ([w["slug"] for w in natural["widgets"]], [f["slug"] for f in natural["fixtures"]])
    for name, (widgets, fixtures) in catalogs.items():
        longest_fixtures = tuple(sorted(fixtures, key=tokens)[-MAX_FIXTURES_PER_PICK:])
        decision = render_pick(Pick(widget=max(widgets, key=tokens), fixtures=longest_fixtures, title=""))
        longest = tokens(decision) + MAX_TITLE_CHARS + 1  # the title's characters, then the end-of-turn token
        assert longest <= ANSWER_TOKEN_LIMIT, (name, decision, longest)
    assert DEFAULT_MAX_NEW_TOKENS == OnlineLearningConfig().max_new_tokens == ServingConfig().max_tokens == ANSWER_TOKEN_LIMIT


def test_with_a_dense_weight_the_shortlist_finds_a_fixture_by_meaning_where_no_word_matches():
    """"outside" is not in the outdoor sensor's text, and "hot" in none: BM25 alone scores every fixture 0 and keeps
    catalog order; with WordLlama's embeddings beside it the outdoor temperature comes first."""
    fixtures = (
        CatalogItem("lobby_temp", "Lobby temperature", "Air temperature in the main lobby, degC."),
        CatalogItem("open_work_orders", "Open work orders", "Maintenance work orders that are open."),
        CatalogItem("outdoor_air_temp", "Outdoor air temperature", "Outdoor air temperature at the weather station, degC."),
    )
    assert Catalog(CATALOG.widgets, fixtures, dense_weight=1.0).fixture_shortlist("how hot is it outside")[0] == "outdoor_air_temp"
    assert Catalog(CATALOG.widgets, fixtures, dense_weight=0.0).fixture_shortlist("how hot is it outside")[0] == "lobby_temp"
    # Where BM25 has a match, a small weight leaves its first in place.
    assert Catalog(CATALOG.widgets, fixtures, dense_weight=0.01).fixture_shortlist("lobby temperature")[0] == "lobby_temp"


def test_the_dense_weight_comes_from_the_environment_and_bad_values_are_refused(monkeypatch):
    monkeypatch.delenv("RL_SHORTLIST_DENSE_WEIGHT", raising=False)
    assert Catalog(CATALOG.widgets, CATALOG.fixtures).dense_weight == 1.0
    monkeypatch.setenv("RL_SHORTLIST_DENSE_WEIGHT", "0.5")
    assert Catalog(CATALOG.widgets, CATALOG.fixtures).dense_weight == 0.5
    for bad in ("lots", "-1", "nan", "inf"):
        monkeypatch.setenv("RL_SHORTLIST_DENSE_WEIGHT", bad)
        with pytest.raises(ValueError, match="RL_SHORTLIST_DENSE_WEIGHT must be a number >= 0"):
            Catalog(CATALOG.widgets, CATALOG.fixtures)


def test_the_word_embeddings_leave_the_root_logger_as_it_was():
    """wordllama calls logging.basicConfig(level=INFO) when imported; in a process whose root logger had no handler
    (a management command's: Django's LOGGING configures `rl` and `feedback` only) every library's INFO and DEBUG
    records then printed, bm25s's "Building index from tokens" once per shortlist index among them. After a shortlist
    with the embeddings, those records must still go nowhere."""
    root = Path(__file__).resolve().parent.parent
    script = (
        "import logging\n"
        "from tests.rl_cases import CATALOG\n"
        "from rl.core.prompts import Catalog\n"
        "print(Catalog(CATALOG.widgets, CATALOG.fixtures, dense_weight=1.0).fixture_shortlist('Which work orders are open?')[0])\n"
        "logging.getLogger('httpx').info('an info record of a library')\n"
        "print(len(logging.getLogger().handlers), logging.getLevelName(logging.getLogger().level))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root), "DJANGO_SETTINGS_MODULE": "backend.settings"}
    done = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[1] == "0 WARNING"
    assert "bm25s" not in done.stderr and "an info record" not in done.stderr, done.stderr
