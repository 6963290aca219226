"""Demo data: a building-operations command center, its exhaustive widget variants, and a SIMULATED rater.

Nothing here is real feedback. The simulated rater knows which widget and fixtures truly answer each
question (the scenario template says so) and rates with some noise, so the demo has the shape of real data.
Deterministic for a given seed.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from feedback.files import (
    EntryRecord, FeedbackData, FeedbackRatings, FixtureRecord, RaterRecord, RatingRecord, ScenarioRecord, WidgetRecord,
)

SIMULATED_RATER = "simulated-rater"
SIMULATED_SECOND_RATER = "simulated-rater-2"
DEMO_RATER = "demo"
DEMO_RATER_PASSWORD = "demo-rater-password"

WIDGETS = [
    ("kpi_card", "KPI card", "One current value with its trend."),
    ("line_chart", "Line chart", "A measurement over time."),
    ("bar_chart", "Bar chart", "Values compared across categories."),
    ("gauge", "Gauge", "One value against its limits."),
    ("table", "Table", "Rows of records to read and sort."),
    ("alarm_list", "Alarm list", "Active alarms by priority."),
    ("heatmap", "Heatmap", "A value by hour and weekday."),
    ("floor_map", "Floor map", "Values per zone on a floor plan."),
    ("pie_chart", "Pie chart", "Shares of a total."),
    ("status_grid", "Status grid", "Run, off or fault state of equipment."),
    ("scatter_plot", "Scatter plot", "Two measurements against each other."),
    ("event_timeline", "Event timeline", "Events in time order."),
]

# (slug, name, description, kind); `kind` drives the simulation only and is not part of the catalog.
FIXTURES = [
    ("ahu_1_supply_temp", "AHU-1 supply air temperature", "Supply air temperature leaving air handler 1, degC.", "temperature"),
    ("ahu_2_supply_temp", "AHU-2 supply air temperature", "Supply air temperature leaving air handler 2, degC.", "temperature"),
    ("ahu_3_supply_temp", "AHU-3 supply air temperature", "Supply air temperature leaving air handler 3, degC.", "temperature"),
    ("ahu_3_return_temp", "AHU-3 return air temperature", "Return air temperature entering air handler 3, degC.", "temperature"),
    ("chw_supply_temp", "Chilled water supply temperature", "Chilled water supply temperature from the central plant, degC.", "temperature"),
    ("outdoor_air_temp", "Outdoor air temperature", "Outdoor air temperature at the rooftop weather station, degC.", "temperature"),
    ("zone_temp_floor_2", "Floor 2 average zone temperature", "Average space temperature of floor 2 zones, degC.", "temperature"),
    ("server_room_temp", "Server room temperature", "Server room cold aisle temperature, degC.", "temperature"),
    ("chiller_1_kw", "Chiller 1 power", "Electrical power drawn by chiller 1, kW.", "power"),
    ("chiller_2_kw", "Chiller 2 power", "Electrical power drawn by chiller 2, kW.", "power"),
    ("main_meter_kw", "Building demand", "Whole-building electrical demand at the main meter, kW.", "power"),
    ("lighting_kw", "Lighting power", "Electrical power of all lighting circuits, kW.", "power"),
    ("ups_kw", "Data hall UPS load", "Load on the data hall UPS, kW.", "power"),
    ("main_meter_kwh", "Main meter energy", "Whole-building electricity consumption, kWh per interval.", "energy"),
    ("gas_meter_m3", "Gas meter", "Natural gas consumption of the boilers, cubic meters.", "energy"),
    ("water_meter_m3", "Domestic water meter", "Domestic water consumption, cubic meters.", "energy"),
    ("zone_co2_floor_2", "Floor 2 CO2", "Carbon dioxide concentration in floor 2 open office, ppm.", "air"),
    ("zone_co2_floor_3", "Floor 3 CO2", "Carbon dioxide concentration in floor 3 open office, ppm.", "air"),
    ("conference_room_co2", "Conference room CO2", "Carbon dioxide concentration in the main conference room, ppm.", "air"),
    ("lobby_humidity", "Lobby humidity", "Relative humidity in the main lobby, percent.", "air"),
    ("ahu_1_static_pressure", "AHU-1 duct static pressure", "Supply duct static pressure of air handler 1, Pa.", "pressure"),
    ("chw_flow_rate", "Chilled water flow", "Chilled water flow rate in the primary loop, l/s.", "pressure"),
    ("energy_by_floor", "Energy by floor", "Electricity consumption per floor from submeters, kWh.", "compare"),
    ("energy_by_building", "Energy by building", "Monthly electricity consumption per campus building, kWh.", "compare"),
    ("occupancy_by_floor", "Occupancy by floor", "Current people count per floor from badge and sensor data.", "compare"),
    ("energy_by_end_use", "Energy by end use", "Electricity split into HVAC, lighting, plug loads and data hall, kWh.", "share"),
    ("work_orders_by_trade", "Work orders by trade", "Open work orders split by trade: HVAC, electrical, plumbing, cleaning.", "share"),
    ("active_alarms", "Active alarms", "Building management system alarms that are active now, with priority.", "alarms"),
    ("fire_panel_alarms", "Fire panel alarms", "Active alarms and troubles from the fire alarm panel.", "alarms"),
    ("alarm_history", "Alarm history", "Past alarms with start, end and acknowledgement times.", "events"),
    ("door_access_events", "Door access events", "Badge swipes and door forced or held open events.", "events"),
    ("open_work_orders", "Open work orders", "Maintenance work orders that are open, with asset, trade and due date.", "records"),
    ("overdue_work_orders", "Overdue work orders", "Work orders past their due date, with asset and assignee.", "records"),
    ("ahu_run_status", "Air handler run status", "Run, off or fault state of every air handling unit.", "status"),
    ("pump_status", "Pump status", "Run, off or fault state of chilled and hot water pumps.", "status"),
    ("elevator_status", "Elevator status", "In service, out of service or fault state of each elevator.", "status"),
    ("floor_2_zone_temps", "Floor 2 zone temperatures", "Space temperature of every floor 2 zone, for the floor plan.", "spatial"),
    ("floor_3_zone_temps", "Floor 3 zone temperatures", "Space temperature of every floor 3 zone, for the floor plan.", "spatial"),
    ("floor_3_occupancy_zones", "Floor 3 zone occupancy", "People count in every floor 3 zone, for the floor plan.", "spatial"),
    ("leak_sensors", "Leak sensors", "Water leak detector states by location.", "status"),
]

SITES = ["HQ Tower", "Riverside Campus", "Data Center East", "Harbor Office"]
ROLES = ["facility manager", "HVAC technician", "energy manager", "control room operator"]


@dataclass(frozen=True)
class Intent:
    """A kind of operator question: its phrasings, the widgets that answer it, and the fixture kinds it is about."""

    name: str
    phrasings: tuple[str, ...]
    good_widgets: tuple[str, ...]
    fixture_kinds: tuple[str, ...]
    time_ranges: tuple[str, ...]


INTENTS = [
    Intent("trend", ("How has the {name} trended over the {range}?", "Show me the {name} over the {range}.",
                     "Plot {name} for the {range} so I can spot drift."),
           ("line_chart",), ("temperature", "power", "air", "pressure", "energy"), ("last 24 hours", "last 7 days", "last 30 days")),
    Intent("current", ("What is the {name} right now?", "Give me the current {name}.", "Quick number: {name} now?"),
           ("kpi_card",), ("temperature", "power", "air", "energy"), ("now",)),
    Intent("limits", ("Is the {name} within its setpoint limits?", "How close is the {name} to its alarm limit?"),
           ("gauge",), ("temperature", "pressure", "air"), ("now",)),
    Intent("compare", ("Compare {name} side by side for the {range}.", "Which is highest in {name} over the {range}?"),
           ("bar_chart",), ("compare",), ("this month", "last 7 days")),
    Intent("share", ("What share of the total does each category take in {name}?", "Break down {name} as parts of the whole."),
           ("pie_chart",), ("share",), ("this month",)),
    Intent("alarms", ("Which {name} need attention at {site} now?", "Show me the {name} by priority."),
           ("alarm_list",), ("alarms",), ("now",)),
    Intent("records", ("List the {name} I need to follow up.", "Give me the {name} with their assets and dates."),
           ("table",), ("records",), ("now", "this week")),
    Intent("status", ("Which units are running, off or faulted in {name}?", "Show the state of everything in {name}."),
           ("status_grid",), ("status",), ("now",)),
    Intent("where", ("Where are the hot and cold spots in {name}?", "Show {name} on the floor plan."),
           ("floor_map",), ("spatial",), ("now",)),
    Intent("pattern", ("At what hours of the week does the {name} peak?", "Find the daily pattern of {name} over the {range}."),
           ("heatmap",), ("air", "power"), ("last 30 days",)),
    Intent("events", ("What happened in the {name} overnight?", "Walk me through the {name} in order for the {range}."),
           ("event_timeline",), ("events",), ("last 24 hours",)),
]

SCATTER_PAIRS = [
    ("chiller_1_kw", "outdoor_air_temp"), ("chiller_2_kw", "outdoor_air_temp"), ("main_meter_kw", "outdoor_air_temp"),
    ("ahu_3_supply_temp", "ahu_3_return_temp"), ("chw_flow_rate", "chiller_1_kw"), ("gas_meter_m3", "outdoor_air_temp"),
]


@dataclass(frozen=True)
class DemoScenario:
    record: ScenarioRecord
    good_widgets: tuple[str, ...]
    fixtures: tuple[str, ...]
    title: str


def _in_sentence(name: str) -> str:
    return name[0].lower() + name[1:] if name[1:2].islower() else name


def _build_scenarios(rng: random.Random, count: int) -> list[DemoScenario]:
    names = {slug: _in_sentence(name) for slug, name, _d, _k in FIXTURES}
    candidates = [
        (intent, slug) for intent in INTENTS for kind in intent.fixture_kinds
        for slug, _name, _desc, fixture_kind in FIXTURES if fixture_kind == kind
    ]
    rng.shuffle(candidates)
    picks: list[tuple[str, tuple[str, ...], tuple[str, ...], str, str]] = []
    for first, second in SCATTER_PAIRS:
        phrasing = rng.choice(["Does the {a} follow the {b}?", "How does the {a} relate to the {b} over the {range}?"])
        picks.append((phrasing.format(a=names[first], b=names[second], range="last 30 days"), ("scatter_plot",),
                      (first, second), "last 30 days", f"{names[first]} vs {names[second]}"))
    seen: set[str] = set()
    for intent, slug in candidates * 3:
        if len(picks) == count:
            break
        time_range = rng.choice(intent.time_ranges)
        query = rng.choice(intent.phrasings).format(name=names[slug], range=time_range, site="{site}")
        if query not in seen:
            seen.add(query)
            picks.append((query, intent.good_widgets, (slug,), time_range, f"{names[slug]}, {time_range}"))
    rng.shuffle(picks)
    scenarios = []
    for index, (query, good_widgets, fixtures, time_range, title) in enumerate(picks):
        site = rng.choice(SITES)
        query = query.replace("{site}", site)
        scenarios.append(DemoScenario(
            ScenarioRecord(id=f"s{index + 1:03d}", query=query[0].upper() + query[1:], site=site,
                           role=rng.choice(ROLES), time_range=time_range),
            good_widgets, fixtures, title,
        ))
    return scenarios


def _wrong_fixtures(rng: random.Random, right: tuple[str, ...], how_many: int) -> list[tuple[str, ...]]:
    kind_of = {slug: kind for slug, _n, _d, kind in FIXTURES}
    same_kind = [slug for slug, _n, _d, kind in FIXTURES if kind == kind_of[right[0]] and slug not in right]
    others = [slug for slug, _n, _d, _k in FIXTURES if slug not in right and slug not in same_kind]
    rng.shuffle(same_kind)
    rng.shuffle(others)
    pool = (same_kind + others)[:how_many]
    return [tuple(sorted((slug,) + right[1:])) for slug in pool]


def build_demo(seed: int = 7, scenario_count: int = 96, noise: float = 0.05) -> tuple[FeedbackData, FeedbackRatings]:
    """The demo's data file and ratings file, as the exhaustive simulation and the simulated raters would write them."""
    rng = random.Random(seed)
    scenarios = _build_scenarios(rng, scenario_count)
    entries: list[EntryRecord] = []
    truth: dict[str, bool] = {}
    correction: dict[str, tuple[str, tuple[str, ...]]] = {}
    for scenario in scenarios:
        sid = scenario.record.id
        right = tuple(sorted(scenario.fixtures))
        for widget, _name, _desc in WIDGETS:
            entry_id = f"{sid}-{widget}"
            entries.append(EntryRecord(id=entry_id, scenario_id=sid, widget=widget, fixtures=list(right), title=scenario.title))
            truth[entry_id] = widget in scenario.good_widgets
            correction[entry_id] = (scenario.good_widgets[0], right)
        for number, wrong in enumerate(_wrong_fixtures(rng, scenario.fixtures, 3), start=1):
            entry_id = f"{sid}-{scenario.good_widgets[0]}-alt{number}"
            entries.append(EntryRecord(id=entry_id, scenario_id=sid, widget=scenario.good_widgets[0], fixtures=list(wrong), title=scenario.title))
            truth[entry_id] = False
            correction[entry_id] = (scenario.good_widgets[0], right)

    start = datetime(2026, 10, 1, 8, 0, tzinfo=timezone.utc)
    ratings: list[RatingRecord] = []
    for index, entry in enumerate(entries):
        is_good = truth[entry.id]
        value = "up" if is_good != (rng.random() < noise) else "down"
        tags: list[str] = []
        corrected_widget, corrected_fixtures = None, []
        if value == "down" and not is_good and rng.random() < 0.1:
            corrected_widget, fixtures = correction[entry.id]
            corrected_fixtures = list(fixtures)
            tags.append("corrected")
        if rng.random() < 0.03:
            tags.append("low_confidence")
        ratings.append(RatingRecord(
            entry_id=entry.id, rating=value, rater=SIMULATED_RATER, created_at=start + timedelta(minutes=index),
            tags=tags, notes="", corrected_widget=corrected_widget, corrected_fixtures=corrected_fixtures,
        ))
        if rng.random() < 0.25:
            second = "up" if is_good != (rng.random() < 2 * noise) else "down"
            ratings.append(RatingRecord(
                entry_id=entry.id, rating=second, rater=SIMULATED_SECOND_RATER, created_at=start + timedelta(minutes=index, seconds=30),
            ))

    data = FeedbackData(
        widgets=[WidgetRecord(slug=s, name=n, description=d) for s, n, d in WIDGETS],
        fixtures=[FixtureRecord(slug=s, name=n, description=d) for s, n, d, _k in FIXTURES],
        scenarios=[s.record for s in scenarios],
        entries=entries,
    )
    raters = [RaterRecord(username=SIMULATED_RATER, simulated=True), RaterRecord(username=SIMULATED_SECOND_RATER, simulated=True)]
    return data, FeedbackRatings(raters=raters, ratings=ratings)
