"""Small hand-built catalogs, scenarios and rated entries for the learning side's tests."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from rl.core.config import TrainingConfig, training_config
from rl.core.prompts import Catalog, CatalogItem, Pick, ScenarioText
from rl.data.data_formatter import RatedEntry, Vote

T0 = datetime(2026, 10, 1, tzinfo=timezone.utc)

CATALOG = Catalog(
    widgets=(
        CatalogItem("kpi_card", "KPI card", "One current value."),
        CatalogItem("line_chart", "Line chart", "A measurement over time."),
        CatalogItem("table", "Table", "Rows of records."),
        CatalogItem("gauge", "Gauge", "A value against limits."),
    ),
    fixtures=(
        CatalogItem("chiller_1_kw", "Chiller 1 power", "Electrical power of chiller 1, kW."),
        CatalogItem("chiller_2_kw", "Chiller 2 power", "Electrical power of chiller 2, kW."),
        CatalogItem("open_work_orders", "Open work orders", "Maintenance work orders that are open."),
        CatalogItem("outdoor_air_temp", "Outdoor air temperature", "Outdoor air temperature, degC."),
    ),
    shortlist_size=3,
)

SCENARIOS = {
    "s1": ScenarioText("How has chiller 1 power trended this week?", "HQ", "operator", "last 7 days"),
    "s2": ScenarioText("Which work orders are open?", "HQ", "technician", "now"),
}


def vote(value: str, rater: str = "ann", minutes: int = 0, **kwargs) -> Vote:
    return Vote(rater=rater, value=value, created_at=T0 + timedelta(minutes=minutes), **kwargs)


def entry(entry_id: str, scenario: str, widget: str, fixtures: tuple[str, ...], *votes: Vote) -> RatedEntry:
    return RatedEntry(entry_id, scenario, Pick(widget, fixtures, "title"), tuple(votes))


# Training settings that make a run on the tiny model take seconds. Adapters on both of its two layers: the `cpu`
# preset's top half would be one, too little for the tests that check training learns in a few steps.
FAST = dict(batch_size=4, max_steps=4, logging_steps=1, save_steps=2, max_eval_pairs=8, max_train_pairs=24,
            learning_rate=5e-3, min_samples=10, warmup_ratio=0.0, eval_steps=0, pick_eval_scenarios=0, lora_layer_share=1.0)


def tiny_config(tiny_model_dir, **overrides) -> TrainingConfig:
    return training_config("cpu", base_model=str(tiny_model_dir), **{**FAST, **overrides})


def data() -> dict:
    return {"source": "db", "data_path": None, "ratings_path": None, "rater": None}
