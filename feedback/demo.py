"""Demo data: a portfolio of buildings, operators' questions about them, every widget variant, and SIMULATED raters.

Nothing here is real feedback. Questions are generated from many phrasings per widget (direct and indirect, with
abbreviations, synonyms, optional time phrases, extra clauses and a few typos), about fixtures named by what they
measure. Each site has its own fixture catalog, so the right fixture is only found by reading the prompt's shortlist.
The simulated rater knows which widget and fixtures answer each question and rates with some noise, corrections and
`low_confidence` tags, so the demo has the shape of real data. Deterministic for a given seed.

The natural-question evaluation set (`evalsets/natural/`) is written by hand, apart from this generator; a test
bounds how many word n-grams the two share.
"""
from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from feedback.files import (
    EntryRecord, FeedbackData, FeedbackRatings, FixtureRecord, RaterRecord, RatingRecord, ScenarioRecord, WidgetRecord,
)

SIMULATED_RATER = "simulated-rater"
SIMULATED_SECOND_RATER = "simulated-rater-2"
DEMO_RATER = "demo"
DEMO_RATER_PASSWORD = "demo-rater-password"
DEFAULT_SCENARIO_COUNT = 480

WIDGETS = [
    ("kpi_card", "KPI card", "One current value, now."),
    ("line_chart", "Line chart", "A value over time: trend, history."),
    ("bar_chart", "Bar chart", "Values compared across categories."),
    ("gauge", "Gauge", "One value against its limits."),
    ("table", "Table", "Rows of records: work orders, lists."),
    ("alarm_list", "Alarm list", "Active alarms by priority."),
    ("heatmap", "Heatmap", "A value by hour and weekday: patterns."),
    ("floor_map", "Floor map", "Values per zone on a floor plan."),
    ("pie_chart", "Pie chart", "Shares of a total."),
    ("status_grid", "Status grid", "Run, off or fault state of equipment."),
    ("scatter_plot", "Scatter plot", "Two measurements against each other."),
    ("event_timeline", "Event timeline", "Past events in time order."),
]

# What each widget shows, by the kind of fixture it needs. Numeric points can be trended, read now, held against
# limits, patterned by hour or correlated; the other kinds each fit one widget.
NUMERIC_KINDS = ("temperature", "air", "power", "energy", "hydronic")
WIDGET_FIXTURE_KINDS: dict[str, tuple[str, ...]] = {
    "line_chart": NUMERIC_KINDS,
    "kpi_card": NUMERIC_KINDS,
    "gauge": ("temperature", "air", "hydronic", "power"),
    "heatmap": ("power", "energy", "air", "temperature"),
    "scatter_plot": NUMERIC_KINDS,
    "bar_chart": ("compare",),
    "pie_chart": ("share",),
    "alarm_list": ("alarms",),
    "table": ("records",),
    "status_grid": ("status",),
    "floor_map": ("spatial",),
    "event_timeline": ("events",),
}


@dataclass(frozen=True)
class DemoFixture:
    slug: str
    name: str
    description: str
    kind: str
    site: str
    refs: tuple[str, ...]  # how operators refer to it, without an article


@dataclass(frozen=True)
class SiteSpec:
    name: str
    prefix: str
    air_handlers: tuple[str, ...]
    chillers: tuple[str, ...]
    floors: tuple[int, ...]
    rooms: tuple[str, ...]
    extra: tuple[tuple[str, str, str, str, tuple[str, ...]], ...] = ()  # (slug, name, description, kind, refs)


SITES = [
    SiteSpec("HQ Tower", "hq", ("1", "2", "3"), ("1", "2"), (2, 3, 4), ("server room", "main lobby", "boardroom"),
             (("hq_elevator_status", "Elevator status", "In service, out of service or fault state of each elevator.", "status",
               ("elevators", "lifts", "elevator bank")),)),
    SiteSpec("Riverside Campus", "rv", ("4", "5"), ("3",), (1, 2), ("cafeteria", "library", "lab wing"),
             (("rv_boiler_status", "Boiler status", "Run, off or fault state of the hot water boilers.", "status",
               ("boilers", "boiler plant", "hot water boilers")),
              ("rv_energy_by_building", "Energy by building", "Monthly electricity consumption per campus building, kWh.", "compare",
               ("energy per building", "building-by-building electricity", "consumption of each campus building")))),
    SiteSpec("Data Center East", "dc", ("7",), ("4", "5"), (1,), ("data hall 1", "data hall 2", "battery room"),
             (("dc_ups_load_kw", "UPS load", "Load on the data hall UPS, kW and percent of rating.", "power",
               ("UPS load", "UPS", "uninterruptible power supply load")),
              ("dc_crac_status", "CRAC unit status", "Run, off or fault state of every computer room air conditioner (CRAC).", "status",
               ("CRAC units", "computer room ACs", "CRACs")))),
    SiteSpec("Harbor Office", "hb", ("8", "9"), (), (1, 2, 3), ("reception", "training room"),
             (("hb_rtu_status", "Rooftop unit status", "Run, off or fault state of the rooftop units (RTU).", "status",
               ("rooftop units", "RTUs", "packaged rooftop units")),)),
]


def _ahu_names(number: str) -> tuple[str, ...]:
    return (f"AHU-{number}", f"AHU {number}", f"AHU{number}", f"air handler {number}", f"air handling unit {number}")


def _floor_names(floor: int) -> tuple[str, ...]:
    ordinal = {1: "1st", 2: "2nd", 3: "3rd"}.get(floor, f"{floor}th")
    return (f"floor {floor}", f"level {floor}", f"the {ordinal} floor", f"L{floor}")


def _site_fixtures(site: SiteSpec) -> list[DemoFixture]:
    p, s = site.prefix, site.name
    out: list[DemoFixture] = []

    def add(slug: str, name: str, description: str, kind: str, refs: list[str] | tuple[str, ...]) -> None:
        out.append(DemoFixture(f"{p}_{slug}", name, description, kind, s, tuple(refs)))

    for n in site.air_handlers:
        names = _ahu_names(n)
        add(f"ahu_{n}_supply_temp", f"AHU-{n} supply air temperature",
            f"Supply (discharge) air temperature leaving air handler AHU-{n}, degC.", "temperature",
            [f"{a} {m}" for a in names for m in ("supply air temperature", "supply air temp", "SAT", "discharge air temp")]
            + [f"supply air temp on {a}" for a in names])
        add(f"ahu_{n}_static_pressure", f"AHU-{n} duct static pressure",
            f"Supply duct static pressure of air handler AHU-{n}, Pa.", "hydronic",
            [f"{a} {m}" for a in names for m in ("duct static pressure", "static pressure", "duct static")])
    for n in site.chillers:
        names = (f"chiller {n}", f"CH-{n}", f"chiller #{n}", f"chiller no. {n}")
        add(f"chiller_{n}_kw", f"Chiller {n} power", f"Electrical power drawn by chiller {n}, kW.", "power",
            [f"{c} {m}" for c in names for m in ("power", "kW", "power draw", "electrical load", "demand")])
    if site.chillers:
        add("chw_supply_temp", "Chilled water supply temperature", "Chilled water supply temperature (CHWST) from the plant, degC.",
            "temperature", ["chilled water supply temperature", "CHW supply temp", "CHWST", "chilled water temp", "leaving chilled water temperature"])
        add("chw_flow", "Chilled water flow", "Chilled water flow rate in the primary loop, l/s.", "hydronic",
            ["chilled water flow", "CHW flow", "primary loop flow", "chilled water flow rate"])
    for floor in site.floors:
        names = _floor_names(floor)
        add(f"floor_{floor}_temp", f"Floor {floor} average temperature", f"Average space temperature of floor {floor} zones, degC.",
            "temperature", [f"{f} {m}" for f in names for m in ("temperature", "space temp", "average temperature", "room temperature")])
        add(f"floor_{floor}_co2", f"Floor {floor} CO2", f"Carbon dioxide (CO2) concentration in floor {floor} open office, ppm.",
            "air", [f"{f} {m}" for f in names for m in ("CO2", "carbon dioxide", "CO2 level", "air quality")])
        add(f"floor_{floor}_zone_temps", f"Floor {floor} zone temperatures",
            f"Space temperature of every floor {floor} zone, for the floor plan.", "spatial",
            [f"{f} {m}" for f in names for m in ("zone temperatures", "zones", "hot and cold spots", "zone temps")])
    for room in site.rooms:
        key = room.replace(" ", "_")
        add(f"{key}_temp", f"{room.capitalize()} temperature", f"Air temperature in the {room}, degC.", "temperature",
            [f"{room} temperature", f"{room} temp", f"temperature in the {room}"])
        add(f"{key}_humidity", f"{room.capitalize()} humidity", f"Relative humidity (RH) in the {room}, percent.", "air",
            [f"{room} humidity", f"{room} RH", f"relative humidity in the {room}"])
    add("outdoor_air_temp", "Outdoor air temperature", "Outdoor air temperature (OAT) at the rooftop weather station, degC.",
        "temperature", ["outdoor air temperature", "outside air temp", "OAT", "outdoor temp", "outside temperature"])
    add("main_meter_kw", "Building demand", "Whole-building electrical demand (power draw) at the main meter, kW.", "power",
        ["building demand", "main meter kW", "whole-building power", "electrical demand", "site power draw"])
    add("main_meter_kwh", "Main meter energy", "Whole-building electricity consumption, kWh per interval.", "energy",
        ["electricity consumption", "main meter kWh", "energy use", "electricity usage", "kWh consumption"])
    add("gas_meter", "Gas meter", "Natural gas consumption of the boilers, cubic meters.", "energy",
        ["gas consumption", "gas meter", "natural gas usage", "gas use"])
    add("water_meter", "Domestic water meter", "Domestic water consumption, cubic meters.", "energy",
        ["water consumption", "water meter", "water usage", "domestic water use"])
    add("energy_by_floor", "Energy by floor", "Electricity consumption per floor from submeters, kWh.", "compare",
        ["energy by floor", "electricity per floor", "floor-by-floor consumption", "submeter readings per floor"])
    add("occupancy_by_floor", "Occupancy by floor", "Current people count per floor from badge and sensor data.", "compare",
        ["occupancy by floor", "people per floor", "headcount on each floor", "floor occupancy"])
    add("energy_by_end_use", "Energy by end use", "Electricity split into HVAC, lighting, plug loads and other uses, kWh.", "share",
        ["energy by end use", "end-use split", "HVAC versus lighting versus plug loads", "electricity by end use"])
    add("work_orders_by_trade", "Work orders by trade", "Open work orders split by trade: HVAC, electrical, plumbing, cleaning.", "share",
        ["work orders by trade", "work order mix by trade", "tickets per trade", "maintenance requests by trade"])
    add("active_alarms", "Active alarms", "Building management system (BMS) alarms that are active now, with priority.", "alarms",
        ["BMS alarms", "active alarms", "building alarms", "alarms"])
    add("fire_panel_alarms", "Fire panel alarms", "Active alarms and troubles from the fire alarm panel.", "alarms",
        ["fire panel alarms", "fire alarm troubles", "fire panel", "life safety alarms"])
    add("alarm_history", "Alarm history", "Past alarms with start, end and acknowledgement times.", "events",
        ["alarm history", "past alarms", "alarm log", "alarms that came and went"])
    add("door_access_events", "Door access events", "Badge swipes and door forced or held open events.", "events",
        ["door access events", "badge swipes", "door events", "access control log"])
    add("open_work_orders", "Open work orders", "Maintenance work orders that are open, with asset, trade and due date.", "records",
        ["open work orders", "open tickets", "maintenance backlog", "outstanding work orders"])
    add("overdue_work_orders", "Overdue work orders", "Work orders past their due date, with asset and assignee.", "records",
        ["overdue work orders", "late work orders", "past-due tickets", "overdue maintenance"])
    add("ahu_run_status", "Air handler run status", "Run, off or fault state of every air handling unit (AHU, AHUs, air handlers).", "status",
        ["air handlers", "AHUs", "air handling units", "AHU fleet"])
    add("pump_status", "Pump status", "Run, off or fault state of chilled and hot water pumps.", "status",
        ["pumps", "pump fleet", "chilled and hot water pumps", "circulation pumps"])
    add("leak_sensors", "Leak sensors", "Water leak detector states by location.", "status",
        ["leak sensors", "leak detectors", "water leak detection", "flood sensors"])
    for slug, name, description, kind, refs in site.extra:
        out.append(DemoFixture(slug, name, description, kind, s, refs))
    return out


FIXTURES: list[DemoFixture] = [f for site in SITES for f in _site_fixtures(site)]
SITE_NAMES = [site.name for site in SITES]
ROLES = ["facility manager", "HVAC technician", "energy manager", "control room operator", "building engineer", "night shift supervisor"]

# Time phrases: (as said in the question, the dashboard time range it sets).
PAST_RANGES = [("over the last 24 hours", "last 24 hours"), ("since yesterday", "last 24 hours"), ("this week", "last 7 days"),
               ("for the past 7 days", "last 7 days"), ("over the last month", "last 30 days"), ("in the last 30 days", "last 30 days"),
               ("overnight", "last 12 hours"), ("since Monday", "last 7 days"), ("today", "today"), ("in the past hour", "last hour")]
LONG_RANGES = [("over the last month", "last 30 days"), ("in the last 30 days", "last 30 days"), ("over the past few weeks", "last 30 days"),
               ("this quarter", "last 90 days"), ("over the last two weeks", "last 14 days")]

# Phrasings per widget. {f} is a fixture reference, {g} a second one (scatter), {t} a time phrase (may be empty).
PHRASINGS: dict[str, tuple[str, ...]] = {
    "line_chart": (
        "How has {f} trended {t}?", "Show me {f} {t}.", "Plot {f} {t}.", "Graph {f} {t}", "Has {f} been drifting {t}?",
        "What did {f} do {t}?", "I want to see how {f} changed {t}", "{f} history {t}", "Trend {f} {t} please",
        "Was {f} stable {t}?", "Did {f} spike at any point {t}?", "Chart {f} {t}", "Pull up {f} over time",
        "Look back at {f} {t}", "How did {f} behave {t}?", "Any ups and downs in {f} {t}?", "Track {f} {t}",
        "Is {f} creeping up {t}?", "time series of {f} {t}", "When did {f} start climbing {t}?", "Has {f} dropped off {t}?",
        "trend line for {f} {t}",
    ),
    "kpi_card": (
        "What is {f} right now?", "Current {f}?", "Give me the current {f}.", "Quick number: {f} now?", "What's {f} at the moment?",
        "{f} now", "Read me {f}", "Where is {f} sitting right now?", "Latest {f} value?", "What does {f} read?",
        "Just the number for {f}", "How much is {f} at this moment?", "Tell me {f} as of now", "What are we at for {f}?",
        "Live value of {f}", "Check {f} for me, current value only", "Single figure: {f}", "Snapshot of {f} right now",
        "Present {f} reading?", "What is {f} showing now?", "headline number for {f}",
    ),
    "gauge": (
        "Is {f} within its limits?", "How close is {f} to its alarm limit?", "Is {f} near the high limit?",
        "Are we about to exceed the limit on {f}?", "Is {f} in the safe band?", "Is {f} inside its setpoint range?",
        "How much headroom is left on {f}?", "Is {f} running too hot or too cold against setpoint?", "Has {f} hit its threshold?",
        "Is {f} in the green?", "Compare {f} against its limits", "Are we close to tripping on {f}?",
        "How far is {f} from its setpoint?", "Is {f} over the limit right now?", "Where does {f} sit between min and max?",
        "Is {f} out of range?", "Are we about to max out {f}?", "Margin to alarm on {f}?", "Is {f} at a dangerous level?",
        "Is {f} okay versus its limits?", "red zone check on {f}",
    ),
    "heatmap": (
        "At what hours of the week does {f} peak?", "Find the daily pattern of {f} {t}.", "Which weekday hours is {f} highest?",
        "When in the day does {f} usually spike?", "Show {f} by hour and day of week", "Is there a weekly pattern in {f}?",
        "What time of day is {f} worst?", "Hour-by-hour pattern of {f} {t}", "Does {f} follow the occupancy schedule?",
        "Which hours of the week have the highest {f}?", "Map {f} across hours and weekdays {t}", "Is {f} high on weekends too?",
        "When during the week does {f} ramp up?", "Typical day and week profile of {f}", "Are mornings or afternoons worse for {f}?",
        "Weekly rhythm of {f} {t}", "Is {f} left high at night and on weekends?", "Peak hours for {f} {t}?",
        "Hours of the week where {f} runs high", "What's the usual schedule of {f}?", "Daily cycle of {f} by weekday",
    ),
    "scatter_plot": (
        "Does {f} follow {g}?", "How does {f} relate to {g} {t}?", "Is {f} correlated with {g}?", "Plot {f} against {g}",
        "Does {f} go up when {g} goes up?", "Relationship between {f} and {g} {t}", "{f} versus {g}", "Is {f} driven by {g}?",
        "Correlate {f} with {g} {t}", "Does {g} explain {f}?", "Check whether {f} tracks {g}", "{f} vs {g} {t}",
        "How sensitive is {f} to {g}?", "Is there a link between {f} and {g}?", "Put {f} on one axis and {g} on the other",
        "Does {f} rise with {g}?", "What's the correlation of {f} and {g} {t}?", "Is {f} tied to {g}?",
        "Does {f} respond to {g}?", "Are {f} and {g} connected?", "Compare {f} with {g} point by point",
    ),
    "bar_chart": (
        "Compare {f} side by side {t}.", "Which is highest in {f} {t}?", "Rank {f} {t}", "Who uses the most? Show {f}",
        "Side-by-side {f} {t}", "Which one stands out in {f}?", "Break {f} into bars {t}", "Show {f} so I can compare",
        "Where is the most in {f} {t}?", "Lowest and highest in {f}?", "Compare the numbers in {f}", "How do they stack up in {f}?",
        "Top to bottom ranking of {f}", "Which is the biggest in {f} {t}?", "Put {f} next to each other", "Leaderboard of {f} {t}",
        "Which category wins in {f}?", "Show me {f} compared {t}", "Contrast {f} {t}", "Is one much higher than the rest in {f}?",
        "Column chart of {f}",
    ),
    "pie_chart": (
        "What share of the total does each category take in {f}?", "Break down {f} as parts of the whole.",
        "What percent goes to each slice of {f}?", "How is {f} split up?", "Proportions in {f} {t}?", "Share of each in {f}",
        "What fraction of the total is each part of {f}?", "Show {f} as percentages", "Which part of {f} takes the biggest share?",
        "Split of {f} {t}", "Percentage breakdown of {f}", "How much of the total is each category in {f}?", "Composition of {f}",
        "Divide {f} into its shares", "What makes up {f}?", "Slice up {f} for me", "Distribution of {f} as a share of total",
        "Which piece of {f} dominates?", "Mix in {f} {t}", "Relative share across {f}", "Pie of {f}",
    ),
    "alarm_list": (
        "Which {f} need attention now?", "Show me the {f} by priority.", "What {f} are active?", "Any {f} going off?",
        "List the current {f}", "What's alarming right now in {f}?", "Are there critical {f}?", "Top priority {f} now",
        "Which {f} are unacknowledged?", "What do I need to respond to in {f}?", "Anything red in {f}?", "Open {f} right now",
        "Highest priority items in {f}", "Do we have any {f} at the moment?", "What's in alarm in {f}?", "Show active {f} first",
        "Urgent {f}?", "Which {f} should I handle first?", "Current {f} sorted by severity", "Any new {f}?", "{f} needing action",
    ),
    "table": (
        "List the {f} I need to follow up.", "Give me the {f} with their assets and dates.", "Show {f} as a list",
        "Which {f} are assigned to whom?", "I need the details of {f}", "Sortable list of {f}", "Rows of {f} with due dates",
        "Who owns each of the {f}?", "Export-ready list of {f}", "What are the {f}, one by one?", "All {f} with their details",
        "Show the {f} and their assignees", "Itemize {f}", "Line by line: {f}", "Full list of {f} {t}",
        "Which assets have {f}?", "Due dates for {f}", "The {f}, please, in a table", "Records of {f}", "Details on every one of {f}",
        "spreadsheet view of {f}",
    ),
    "status_grid": (
        "Which units are running, off or faulted in {f}?", "Show the state of everything in {f}.", "Are all {f} running?",
        "What's the status of the {f}?", "Any {f} in fault?", "Which {f} are off?", "Run status of {f}", "Are the {f} up?",
        "Which of the {f} are down?", "Is anything faulted among the {f}?", "On/off state of {f}", "Status board for {f}",
        "Which {f} tripped?", "Are any {f} offline?", "Health of each of the {f}", "Running or stopped: {f}",
        "Check the {f} are all on", "Which {f} failed?", "Overview of {f} states", "Are the {f} operating?", "{f} up or down?",
    ),
    "floor_map": (
        "Where are the hot and cold spots in {f}?", "Show {f} on the floor plan.", "Which zones stand out in {f}?",
        "Map {f} across the floor", "Where on the floor is {f} off?", "Which corner is warmest in {f}?", "Layout view of {f}",
        "Where are people complaining? Show {f}", "Spatial view of {f}", "Which areas are out of range in {f}?",
        "Plan view of {f}", "Where exactly is it too warm in {f}?", "Which rooms are off in {f}?", "Zone by zone on the plan: {f}",
        "Show me where in {f}", "Geographic view of {f} on the floor", "Pinpoint the problem zones in {f}", "Overlay {f} on the plan",
        "Which side of the building is off in {f}?", "Where are the warm areas in {f}?", "floor plan with {f}",
    ),
    "event_timeline": (
        "What happened in the {f} overnight?", "Walk me through the {f} in order {t}.", "Sequence of {f} {t}",
        "What came first in the {f}?", "Timeline of {f} {t}", "When did each of the {f} happen?", "Chronology of {f} {t}",
        "What led up to it? Show {f} in order", "Replay the {f} {t}", "Order of {f} {t}", "What occurred in {f} {t}?",
        "Recap of {f} {t}", "Step by step through the {f}", "When did things start in {f}?", "History of {f} in time order",
        "Before and after: {f} {t}", "Show the {f} one after another", "What happened first, then next, in {f}?",
        "Log of {f} as a timeline", "Story of the {f} {t}", "Events in {f} {t}, oldest first",
    ),
}

PREFIXES = ["", "", "", "", "Hey, ", "Quick question: ", "Can you check: ", "pls ", "For the morning meeting: ", "Before I head out: "]
SUFFIXES = ["", "", "", "", ", thanks", " and flag anything odd", ", the tenant is asking", ", need it for the report",
            " before the contractor arrives", " asap"]


@dataclass(frozen=True)
class DemoScenario:
    record: ScenarioRecord
    good_widgets: tuple[str, ...]
    fixtures: tuple[str, ...]
    title: str

    def is_right(self, widget: str, fixtures: Iterable[str]) -> bool:
        """The demo's rule for a right pick: one of the good widgets, showing exactly the scenario's fixtures."""
        return widget in self.good_widgets and sorted(fixtures) == sorted(self.fixtures)


def _typo(rng: random.Random, text: str) -> str:
    """Swap two adjacent letters in one word, as a hurried operator might."""
    words = text.split(" ")
    candidates = [i for i, w in enumerate(words) if len(w) > 4 and w.isalpha()]
    if not candidates:
        return text
    i = rng.choice(candidates)
    j = rng.randrange(1, len(words[i]) - 2)
    word = words[i]
    words[i] = word[:j] + word[j + 1] + word[j] + word[j + 2:]
    return " ".join(words)


def _phrase(rng: random.Random, template: str, refs: list[str], time_phrase: str) -> str:
    text = template.format(f=refs[0], g=refs[1] if len(refs) > 1 else "", t=time_phrase)
    text = " ".join(text.split()).replace(" ?", "?").replace(" .", ".")
    prefix = rng.choice(PREFIXES)
    if prefix and not text[1:2].isupper():
        text = text[0].lower() + text[1:]
    text = prefix + text
    suffix = rng.choice(SUFFIXES)
    if suffix:
        text = text.rstrip("?.") + suffix + ("?" if text.endswith("?") else "")
    if rng.random() < 0.05:
        text = _typo(rng, text)
    if rng.random() < 0.2:
        text = text.lower()
    elif text[0].islower():
        text = text[0].upper() + text[1:]
    if rng.random() < 0.15:
        text = text.rstrip("?.")
    return text


def _time_for(rng: random.Random, widget: str) -> tuple[str, str]:
    if widget in ("kpi_card", "gauge", "alarm_list", "status_grid", "floor_map"):
        return "", rng.choice(["now", "today", "last 24 hours", ""])
    pool = LONG_RANGES if widget == "heatmap" else PAST_RANGES
    if rng.random() < 0.35:
        return "", rng.choice(["last 24 hours", "last 7 days", "today", ""])
    return rng.choice(pool)


def _build_scenarios(rng: random.Random, count: int) -> list[DemoScenario]:
    by_site_kind: dict[tuple[str, str], list[DemoFixture]] = {}
    for fixture in FIXTURES:
        by_site_kind.setdefault((fixture.site, fixture.kind), []).append(fixture)
    widgets = [w for w, _n, _d in WIDGETS]
    per_widget = [count // len(widgets) + (i < count % len(widgets)) for i in range(len(widgets))]
    plan = [w for w, n in zip(widgets, per_widget) for _ in range(n)]
    rng.shuffle(plan)
    template_use: dict[str, Counter] = {w: Counter() for w in widgets}
    seen: set[str] = set()
    scenarios: list[DemoScenario] = []
    for widget in plan:
        for _attempt in range(50):
            site = rng.choice(SITES)
            kinds = [k for k in WIDGET_FIXTURE_KINDS[widget] if by_site_kind.get((site.name, k))]
            if not kinds:
                continue
            pool = [f for k in kinds for f in by_site_kind[(site.name, k)]]
            chosen = rng.sample(pool, 2) if widget == "scatter_plot" else [rng.choice(pool)]
            # Least-used phrasing first, so every phrasing of a widget appears before any repeats.
            templates = sorted(PHRASINGS[widget], key=lambda t: (template_use[widget][t], rng.random()))
            template = templates[0]
            time_phrase, time_range = _time_for(rng, widget)
            query = _phrase(rng, template, [rng.choice(f.refs) for f in chosen], time_phrase)
            if query.lower() in seen:
                continue
            seen.add(query.lower())
            template_use[widget][template] += 1
            title = " vs ".join(f.name for f in chosen) + (f", {time_range}" if time_range else "")
            scenarios.append(DemoScenario(
                ScenarioRecord(id="pending", query=query, site=site.name, role=rng.choice(ROLES), time_range=time_range),
                (widget,), tuple(sorted(f.slug for f in chosen)), title,
            ))
            break
    rng.shuffle(scenarios)
    return [
        DemoScenario(s.record.model_copy(update={"id": f"s{index + 1:03d}"}), s.good_widgets, s.fixtures, s.title)
        for index, s in enumerate(scenarios)
    ]


def _wrong_fixtures(rng: random.Random, scenario: DemoScenario, how_many: int) -> list[tuple[str, ...]]:
    """Plausible wrong data sources: the same kind at the same site first, then anything at that site."""
    by_slug = {f.slug: f for f in FIXTURES}
    first = by_slug[scenario.fixtures[0]]
    site_fixtures = [f for f in FIXTURES if f.site == first.site and f.slug not in scenario.fixtures]
    same_kind = [f.slug for f in site_fixtures if f.kind == first.kind]
    others = [f.slug for f in site_fixtures if f.kind != first.kind]
    rng.shuffle(same_kind)
    rng.shuffle(others)
    return [tuple(sorted((slug,) + scenario.fixtures[1:])) for slug in (same_kind + others)[:how_many]]


@dataclass(frozen=True)
class SimulatedVerdict:
    value: str  # up or down
    corrected_widget: str | None = None
    corrected_fixtures: tuple[str, ...] = ()


def simulated_verdict(scenario: DemoScenario, widget: str, fixtures: tuple[str, ...], rng: random.Random, *, noise: float = 0.05,
                      correction_rate: float = 0.3) -> SimulatedVerdict:
    """How the SIMULATED rater judges a pick for `scenario`: up when the widget is a right one and the fixtures are the
    right ones (the demo's rule), flipped with probability `noise`; a down carries the right pick with `correction_rate`."""
    is_good = scenario.is_right(widget, fixtures)
    value = "up" if is_good != (rng.random() < noise) else "down"
    if value == "down" and not is_good and correction_rate > 0 and rng.random() < correction_rate:
        return SimulatedVerdict(value, scenario.good_widgets[0], tuple(scenario.fixtures))
    return SimulatedVerdict(value)


def build_demo(seed: int = 7, scenario_count: int = DEFAULT_SCENARIO_COUNT, noise: float = 0.05) -> tuple[FeedbackData, FeedbackRatings]:
    """The demo's data file and ratings file, as the exhaustive simulation and the simulated raters would write them."""
    rng = random.Random(seed)
    scenarios = _build_scenarios(rng, scenario_count)
    entries: list[EntryRecord] = []
    scenario_of: dict[str, DemoScenario] = {}
    for scenario in scenarios:
        sid = scenario.record.id
        for widget, _name, _desc in WIDGETS:
            entry_id = f"{sid}-{widget}"
            entries.append(EntryRecord(id=entry_id, scenario_id=sid, widget=widget, fixtures=list(scenario.fixtures), title=scenario.title))
            scenario_of[entry_id] = scenario
        for number, wrong in enumerate(_wrong_fixtures(rng, scenario, 3), start=1):
            entry_id = f"{sid}-{scenario.good_widgets[0]}-alt{number}"
            entries.append(EntryRecord(id=entry_id, scenario_id=sid, widget=scenario.good_widgets[0], fixtures=list(wrong), title=scenario.title))
            scenario_of[entry_id] = scenario
    # Picks that show one of a scenario's two measurements only (a scatter plot of one sensor), the mistake a model
    # that stops after its first fixture makes; last, so the entries above keep the ratings they had without them.
    for scenario in scenarios:
        if len(scenario.fixtures) > 1:
            for number, fixture in enumerate(scenario.fixtures, start=1):
                entry_id = f"{scenario.record.id}-{scenario.good_widgets[0]}-part{number}"
                entries.append(EntryRecord(id=entry_id, scenario_id=scenario.record.id, widget=scenario.good_widgets[0],
                                           fixtures=[fixture], title=scenario.title))
                scenario_of[entry_id] = scenario

    start = datetime(2026, 10, 1, 8, 0, tzinfo=timezone.utc)
    ratings: list[RatingRecord] = []
    for index, entry in enumerate(entries):
        scenario, pick = scenario_of[entry.id], (entry.widget, tuple(entry.fixtures))
        verdict = simulated_verdict(scenario, *pick, rng, noise=noise, correction_rate=0.1)
        tags = ["corrected"] if verdict.corrected_widget else []
        if rng.random() < 0.03:
            tags.append("low_confidence")
        ratings.append(RatingRecord(
            entry_id=entry.id, rating=verdict.value, rater=SIMULATED_RATER, created_at=start + timedelta(minutes=index),
            tags=tags, notes="", corrected_widget=verdict.corrected_widget, corrected_fixtures=list(verdict.corrected_fixtures),
        ))
        if rng.random() < 0.25:
            second = simulated_verdict(scenario, *pick, rng, noise=2 * noise, correction_rate=0)
            ratings.append(RatingRecord(
                entry_id=entry.id, rating=second.value, rater=SIMULATED_SECOND_RATER, created_at=start + timedelta(minutes=index, seconds=30),
            ))

    data = FeedbackData(
        widgets=[WidgetRecord(slug=s, name=n, description=d) for s, n, d in WIDGETS],
        fixtures=[FixtureRecord(slug=f.slug, name=f.name, description=f.description, sites=[f.site]) for f in FIXTURES],
        scenarios=[s.record for s in scenarios],
        entries=entries,
    )
    raters = [RaterRecord(username=SIMULATED_RATER, simulated=True), RaterRecord(username=SIMULATED_SECOND_RATER, simulated=True)]
    return data, FeedbackRatings(raters=raters, ratings=ratings)


def fresh_questions(seed: int, count: int, exclude: set[str] = frozenset()) -> list[DemoScenario]:
    """New operator questions from the demo's generator (another seed), with their right widget and fixtures, leaving
    out any whose wording is in `exclude` (lower-cased): questions a model was not trained on, for the closed loop."""
    scenarios = [s for s in _build_scenarios(random.Random(seed), count * 2) if s.record.query.lower() not in exclude]
    return [DemoScenario(s.record.model_copy(update={"id": f"fresh{seed}-{i + 1:03d}"}), s.good_widgets, s.fixtures, s.title)
            for i, s in enumerate(scenarios[:count])]
