"""A/B promotion on evidence (online learning's deploy_mode ab), with seeded SIMULATED ratings of the picks each arm
served. The engine is llama.cpp's (its registry is a models file, so no server is needed for these decisions)."""
import random
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from feedback.models import Entry, Rating, Scenario, Widget
from rl.core.base_model import default_base_model, file_sha256
from rl.core.config import online_learning_config, serving_config
from rl.deploy.ab import PROMOTE, RETIRE, WAIT, candidate_arm, decide_ab
from rl.deploy.promote import Outcome, promote
from rl.deploy.registry import activate, live_version
from rl.models import Deployment, ModelVersion
from rl.serving.picks import CANDIDATE, choose_version, route
from tests.conftest import free_port

PASSED = {"passed": True, "reasons": ["passed (test)"]}


@pytest.fixture
def arms(demo_db, settings, tmp_path):
    """A live version and a candidate that passed its gate and went into A/B at 20% (deploy_mode ab)."""
    settings.RL_SERVING = {"engine": "llama_cpp"}
    settings.OPENAI_BASE_URL = f"http://127.0.0.1:{free_port()}/v1"
    settings.RL_LLAMA_CPP_MODELS_FILE = tmp_path / "models.json"
    gguf = Path(default_base_model())
    live, candidate = (ModelVersion.objects.create(name="cc-widget-selector", tag=tag, quantization="q4_1", export_dir="",
                                                   gguf_path=str(gguf), sha256=file_sha256(gguf), gate=PASSED)
                       for tag in ("live-one", "candidate-one"))
    activate(live, by="test")
    cfg = online_learning_config(deploy_mode="ab", ab_share=0.2, ab_min_ratings=40, ab_max_ratings=200)
    promotion = promote(candidate, PASSED, cfg, by="test")
    assert promotion.outcome == Outcome.AB_STARTED and Deployment.objects.filter(action="ab_start", version=candidate).exists()
    candidate.refresh_from_db()
    return live, candidate, cfg


def rate_served(version: ModelVersion, count: int, up_share: float, seed: int) -> None:
    """`count` picks served by `version`, each rated by a SIMULATED operator: thumbs up with probability `up_share`."""
    rng = random.Random(seed)
    scenario, widget = Scenario.objects.first(), Widget.objects.first()
    rater = get_user_model().objects.get_or_create(username="ab-operator")[0]
    for i in range(count):
        entry = Entry.objects.create(external_id=f"ab-{version.tag}-{seed}-{i}", scenario=scenario, widget=widget,
                                     source=Entry.Source.PRODUCTION, model_version=version.ollama_name)
        Rating.objects.create(entry=entry, rater=rater, value="up" if rng.random() < up_share else "down")


def test_the_candidate_arm_answers_its_share_of_requests(arms, settings):
    live, candidate, _ = arms
    assert candidate_arm() == candidate and candidate.ab_share == 0.2 and live_version() == live
    keys = [f"request-{i}" for i in range(200)]
    served = [choose_version(key, serving_config())[0].pk for key in keys]
    assert served.count(candidate.pk) == sum(route(key, 0.2) == CANDIDATE for key in keys) > 0


def test_a_clearly_better_arm_is_promoted_with_its_numbers_recorded(arms):
    live, candidate, cfg = arms
    rate_served(candidate, 80, 0.75, seed=1)
    rate_served(live, 160, 0.40, seed=2)
    evidence = decide_ab(cfg, by="online_learn")
    assert evidence.decision == PROMOTE and evidence.p_better < 0.05
    assert live_version() == candidate and candidate_arm() is None
    promotion = Deployment.objects.get(action="ab_promote")
    assert promotion.version == candidate and promotion.previous == live and "p(better)" in promotion.reason


def test_a_clearly_worse_arm_is_retired_and_the_live_model_keeps_all_traffic(arms):
    live, candidate, cfg = arms
    rate_served(candidate, 60, 0.2, seed=3)
    rate_served(live, 160, 0.6, seed=4)
    evidence = decide_ab(cfg, by="online_learn")
    assert evidence.decision == RETIRE and evidence.p_worse < 0.05
    candidate.refresh_from_db()
    assert (candidate.status, candidate.ab_share) == ("retired", 0.0) and live_version() == live and candidate_arm() is None
    assert Deployment.objects.filter(action="ab_retire", version=candidate).exists()


def test_the_decision_waits_while_evidence_is_short_and_gives_up_after_ab_max_ratings(arms):
    live, candidate, cfg = arms
    rate_served(candidate, 20, 0.9, seed=5)  # a strong start, but fewer ratings than ab_min_ratings
    rate_served(live, 100, 0.4, seed=6)
    assert decide_ab(cfg, by="online_learn").decision == WAIT and candidate_arm() == candidate
    rate_served(candidate, 200, 0.4, seed=7)  # then as good as the live model, until ab_max_ratings passed
    evidence = decide_ab(cfg, by="online_learn")
    assert evidence.decision == RETIRE and evidence.p_better >= 0.05 and evidence.p_worse >= 0.05


def test_an_online_learn_tick_decides_the_a_b_before_anything_else(arms, settings):
    from rl.loop.online_learner import init_online_learner

    settings.ENABLE_ONLINE_LEARNING = True
    _live, candidate, _ = arms
    rate_served(candidate, 5, 0.5, seed=8)
    result = init_online_learner(deploy_mode="ab", ab_min_ratings=40, ab_max_ratings=200).tick()
    assert result.action == "ab_wait" and "since the A/B began" in result.message
