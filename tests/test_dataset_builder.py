import pytest
from django.core.management import CommandError, call_command

from rl.data.dataset_builder import InsufficientDataError, prepare_training_dataset, split_scenarios
from rl.data.snapshot import DatasetError


def test_the_file_and_db_sources_give_identical_datasets(demo_db, demo_paths):
    from_db = prepare_training_dataset("db", min_samples=10)
    from_file = prepare_training_dataset("file", *demo_paths, min_samples=10)
    for split in ("train", "eval"):
        assert from_db.dataset[split].to_list() == from_file.dataset[split].to_list()
    assert from_db.kto_dataset["train"].to_list() == from_file.kto_dataset["train"].to_list()
    assert len(from_db.dataset["train"]) > 0 and len(from_db.dataset["eval"]) > 0


def test_the_split_is_by_scenario_with_no_overlap(demo_db):
    prepared = prepare_training_dataset("db", min_samples=10, eval_fraction=0.25)
    train = set(prepared.dataset["train"]["scenario_id"])
    evaluation = set(prepared.dataset["eval"]["scenario_id"])
    assert train and evaluation and not train & evaluation
    assert prepared.stats.scenario_overlap == 0
    assert prepared.stats.eval_scenarios == len(evaluation)


def test_split_scenarios_keeps_at_least_one_on_each_side():
    train, evaluation = split_scenarios({"a", "b", "c"}, 0.01, seed=1)
    assert len(evaluation) == 1 and len(train) == 2


def test_the_file_source_does_not_touch_the_database(db, demo_paths, django_assert_num_queries):
    with django_assert_num_queries(0):
        prepared = prepare_training_dataset("file", *demo_paths, min_samples=10)
    assert prepared.stats.pairs_by_kind["widget"] > 0


def test_too_few_pairs_says_how_many_were_found_and_needed_and_how_to_get_more(demo_db):
    with pytest.raises(InsufficientDataError) as error:
        prepare_training_dataset("db", min_samples=10_000)
    message = str(error.value)
    assert "need at least 10000" in message
    assert "found " in message and "Rate more entries" in message


def test_a_rater_filter_keeps_only_that_rater_s_ratings(demo_db):
    everyone = prepare_training_dataset("db", min_samples=1)
    second = prepare_training_dataset("db", min_samples=1, rater="simulated-rater-2")
    assert 0 < second.stats.ratings < everyone.stats.ratings
    with pytest.raises(InsufficientDataError, match="by rater 'nobody'"):
        prepare_training_dataset("db", min_samples=1, rater="nobody")


def test_stats_report_pairs_filters_and_shortlist_recall(demo_db):
    stats = prepare_training_dataset("db", min_samples=10).stats
    assert stats.pairs_by_kind["widget"] > 0 and stats.pairs_by_kind["fixture"] > 0
    assert stats.filtered.get("low_confidence", 0) > 0
    assert 0.85 <= stats.shortlist_recall <= 1.0 and 0.9 <= stats.shortlist_recall_majority <= 1.0
    assert stats.kto_rows > 0


def test_follow_retriever_trains_only_on_answers_that_keep_the_shortlist_s_order_and_holds_out_every_pair(db, tmp_path):
    from feedback.demo import build_demo
    from feedback.files import write_json
    from rl.data.data_formatter import follows_retriever

    data, ratings = build_demo(seed=5, scenario_count=120)
    write_json(tmp_path / "data.json", data)
    write_json(tmp_path / "ratings.json", ratings)
    files = ("file", tmp_path / "data.json", tmp_path / "ratings.json")
    every = prepare_training_dataset(*files, min_samples=10)
    following = prepare_training_dataset(*files, min_samples=10, follow_retriever=True)

    def overruling(prepared, split):
        catalog, scenarios = prepared.snapshot.catalog, prepared.snapshot.scenarios
        return [row for row in prepared.dataset[split]
                if not follows_retriever(row["chosen"][0]["content"], catalog.shortlist_for(scenarios[row["scenario_id"]]))]

    assert overruling(every, "train") and overruling(every, "eval")  # the demo has right picks the retriever ranks lower
    assert not overruling(following, "train")
    assert list(following.dataset["eval"]) == list(every.dataset["eval"])
    assert len(following.dataset["train"]) == len(every.dataset["train"]) - len(overruling(every, "train"))
    dropped_kto = [row for row in every.kto_dataset["train"] if row["label"] and not follows_retriever(
        row["completion"][0]["content"], every.snapshot.catalog.shortlist_for(every.snapshot.scenarios[row["scenario_id"]]))]
    assert len(following.kto_dataset["train"]) == len(every.kto_dataset["train"]) - len(dropped_kto)
    assert following.stats.filtered["training_chosen_overrules_retriever"] == len(overruling(every, "train")) + len(dropped_kto)


def test_an_unknown_source_or_kind_is_a_clear_error(db):
    with pytest.raises(DatasetError, match="Unknown source"):
        prepare_training_dataset("s3")
    with pytest.raises(DatasetError, match="Unknown kind"):
        prepare_training_dataset("db", kind="pixels")


def test_dry_run_fails_cleanly_on_missing_files_and_too_few_pairs(db, tmp_path):
    with pytest.raises(CommandError, match="No such file"):
        call_command("train_dpo", "--dry-run", "--source", "file", "--data-file", str(tmp_path / "x.json"), "--ratings-file", str(tmp_path / "y.json"))
    with pytest.raises(CommandError, match="--source file needs"):
        call_command("train_dpo", "--dry-run", "--source", "file")


def test_train_dpo_rejects_unknown_flags_and_presets(db):
    with pytest.raises(CommandError):
        call_command("train_dpo", "--dry-run", "--frobnicate")
    with pytest.raises(CommandError):
        call_command("train_dpo", "--dry-run", "--config", "huge")


def test_train_dpo_refuses_a_loss_the_trainer_does_not_compute_before_anything_is_written(db, tmp_path, settings):
    from rl.models import TrainingRun

    settings.RL_CHECKPOINT_DIR = str(tmp_path)
    with pytest.raises(CommandError, match="apo_zero.*the trainer computes sigmoid, sft, ipo, hinge"):
        call_command("train_dpo", "--config", "cpu", "--run-name", "apo", "--loss-type", "apo_zero,sft")
    assert not TrainingRun.objects.exists() and not list(tmp_path.iterdir())


def test_train_dpo_refuses_a_run_name_the_database_holds_though_its_folder_is_gone(db, tmp_path, settings):
    from rl.models import TrainingRun

    settings.RL_CHECKPOINT_DIR = str(tmp_path)
    TrainingRun.objects.create(name="taken", preset="cpu", algo="dpo", base_model="x", status=TrainingRun.Status.FAILED)
    with pytest.raises(CommandError, match="'taken' is recorded already .status failed"):
        call_command("train_dpo", "--config", "cpu", "--run-name", "taken")
    assert TrainingRun.objects.count() == 1 and not list(tmp_path.iterdir())
