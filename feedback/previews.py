"""Small pictures of each widget type with sample data, as server-rendered SVG, so a rater sees roughly what the
operator would see: a line for a line chart, a dial for a gauge, rows for a table, zones on a floor plan, ...

The sample data is made up (seeded by the entry, so a picture does not change between visits); the picture shows the
widget's shape and the fixtures' names, not real readings. Written by hand: it is drawing, and a charting library
would cost more per picture than the whole page.
"""
from __future__ import annotations

import math
import random
from collections.abc import Callable

from django.utils.html import escape

WIDTH, HEIGHT = 240, 100
INK, MUTED, ACCENT, GRID = "#1d2733", "#8796a5", "#1f5fa8", "#dde3ea"
OK, WARN, BAD = "#1f8a4c", "#d98c1a", "#c0392b"


def _svg(slug: str, label: str, body: str) -> str:
    return (f'<svg class="widget-svg" data-widget="{escape(slug)}" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" height="{HEIGHT}" '
            f'role="img" aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg"><title>{escape(label)}</title>'
            f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#f7f9fb" rx="4"/>{body}</svg>')


def svg_text(x: float, y: float, text: str, size: int = 9, fill: str = MUTED, anchor: str = "start", weight: str = "normal") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" fill="{fill}" text-anchor="{anchor}" font-weight="{weight}" '
            f'font-family="system-ui, sans-serif">{escape(text)}</text>')


def _axes() -> str:
    return f'<polyline points="20,8 20,84 232,84" fill="none" stroke="{MUTED}" stroke-width="1"/>'


def _walk(rng: random.Random, n: int) -> list[float]:
    values, value = [], rng.uniform(0.3, 0.7)
    for _ in range(n):
        value = min(0.95, max(0.05, value + rng.uniform(-0.12, 0.12)))
        values.append(value)
    return values


def _line_chart(rng: random.Random, names: list[str]) -> str:
    series = []
    for index, color in enumerate((ACCENT, WARN)[: max(1, min(2, len(names)))]):
        values = _walk(rng, 24)
        points = " ".join(f"{22 + i * 9:.1f},{82 - v * 72:.1f}" for i, v in enumerate(values))
        series.append(f'<polyline class="series" points="{points}" fill="none" stroke="{color}" stroke-width="{2 - index * 0.5}"/>')
    return _axes() + "".join(series) + svg_text(22, 95, "-24 h") + svg_text(232, 95, "now", anchor="end")


def _kpi_card(rng: random.Random, names: list[str]) -> str:
    value, delta = rng.uniform(10, 99), rng.uniform(-5, 5)
    arrow, color = ("▲", BAD) if delta > 0 else ("▼", OK)
    return (svg_text(16, 22, names[0] if names else "value", 10) + svg_text(16, 66, f"{value:.1f}", 34, ACCENT, weight="bold")
            + svg_text(16, 88, f"{arrow} {abs(delta):.1f} vs 1 h ago", 10, color))


def _gauge(rng: random.Random, names: list[str]) -> str:
    share = rng.uniform(0.2, 0.9)
    cx, cy, r = 120, 80, 60

    def point(fraction: float, radius: float) -> tuple[float, float]:
        angle = math.pi * (1 - fraction)
        return cx + radius * math.cos(angle), cy - radius * math.sin(angle)

    (x0, y0), (x1, y1), (xv, yv) = point(0, r), point(1, r), point(share, r)
    (xn, yn) = point(share, r - 14)
    limit_x, limit_y = point(0.8, r)
    return (f'<path d="M{x0:.1f},{y0:.1f} A{r},{r} 0 0 1 {x1:.1f},{y1:.1f}" fill="none" stroke="{GRID}" stroke-width="12"/>'
            f'<path class="value-arc" d="M{x0:.1f},{y0:.1f} A{r},{r} 0 0 1 {xv:.1f},{yv:.1f}" fill="none" stroke="{ACCENT}" stroke-width="12"/>'
            f'<path d="M{limit_x:.1f},{limit_y:.1f} A{r},{r} 0 0 1 {x1:.1f},{y1:.1f}" fill="none" stroke="{BAD}" stroke-width="3"/>'
            f'<line class="needle" x1="{cx}" y1="{cy}" x2="{xn:.1f}" y2="{yn:.1f}" stroke="{INK}" stroke-width="2"/>'
            + svg_text(cx, cy + 14, f"{share * 100:.0f} %", 11, INK, "middle", "bold"))


def _bar_chart(rng: random.Random, names: list[str]) -> str:
    labels = (names * 5)[:5] if names else ["A", "B", "C", "D", "E"]
    bars = []
    for index, label in enumerate(labels):
        height = rng.uniform(0.2, 0.95) * 70
        x = 30 + index * 40
        bars.append(f'<rect class="bar" x="{x}" y="{84 - height:.1f}" width="26" height="{height:.1f}" fill="{ACCENT}"/>'
                    + svg_text(x + 13, 95, label[:7], 7, anchor="middle"))
    return _axes() + "".join(bars)


def _pie_chart(rng: random.Random, names: list[str]) -> str:
    shares = [rng.uniform(1, 3) for _ in range(4)]
    total, start, slices = sum(shares), 0.0, []
    cx, cy, r = 60, 50, 40
    for index, (share, color) in enumerate(zip(shares, (ACCENT, WARN, OK, MUTED))):
        end = start + share / total * 2 * math.pi
        x0, y0 = cx + r * math.sin(start), cy - r * math.cos(start)
        x1, y1 = cx + r * math.sin(end), cy - r * math.cos(end)
        large = 1 if end - start > math.pi else 0
        slices.append(f'<path class="slice" d="M{cx},{cy} L{x0:.1f},{y0:.1f} A{r},{r} 0 {large} 1 {x1:.1f},{y1:.1f} Z" fill="{color}"/>')
        label = names[index] if index < len(names) else f"other {index}"
        slices.append(f'<rect x="120" y="{18 + index * 18}" width="9" height="9" fill="{color}"/>'
                      + svg_text(134, 26 + index * 18, f"{label[:16]} {share / total:.0%}", 8))
        start = end
    return "".join(slices)


def _rows(rng: random.Random, names: list[str], alarms: bool) -> str:
    rows = [svg_text(10, 16, "priority · point · since" if alarms else "id · item · status", 8, INK, weight="bold")]
    for index in range(4):
        y = 22 + index * 18
        rows.append(f'<rect class="row" x="6" y="{y}" width="228" height="15" fill="{"#fff" if index % 2 else "#eef3f8"}"/>')
        if alarms:
            color = (BAD, BAD, WARN, WARN)[index]
            rows.append(f'<circle cx="16" cy="{y + 7.5}" r="4" fill="{color}"/>')
        label = names[index % len(names)] if names else f"item {index + 1}"
        rows.append(svg_text(26 if alarms else 10, y + 11, f"{'' if alarms else f'WO-{rng.randint(1000, 9999)}  '}{label[:26]}", 8, INK))
        rows.append(svg_text(228, y + 11, f"{rng.randint(1, 59)} min" if alarms else ("open", "done", "waiting")[index % 3], 8, anchor="end"))
    return "".join(rows)


def _table(rng: random.Random, names: list[str]) -> str:
    return _rows(rng, names, alarms=False)


def _alarm_list(rng: random.Random, names: list[str]) -> str:
    return _rows(rng, names, alarms=True)


def _heatmap(rng: random.Random, names: list[str]) -> str:
    cells = []
    for day in range(7):
        for hour in range(12):
            level = min(1.0, max(0.0, 0.5 + 0.4 * math.sin((hour - 3) / 12 * 2 * math.pi) * (0.4 if day >= 5 else 1) + rng.uniform(-0.15, 0.15)))
            cells.append(f'<rect class="cell" x="{30 + hour * 17}" y="{6 + day * 12}" width="16" height="11" '
                         f'fill="{ACCENT}" fill-opacity="{0.1 + 0.9 * level:.2f}"/>')
    days = "".join(svg_text(26, 15 + i * 12, d, 7, anchor="end") for i, d in enumerate("MTWTFSS"))
    return "".join(cells) + days + svg_text(30, 97, "0 h", 7) + svg_text(234, 97, "24 h", 7, anchor="end")


def _floor_map(rng: random.Random, names: list[str]) -> str:
    zones = [(10, 8, 70, 40), (80, 8, 80, 40), (160, 8, 70, 40), (10, 48, 110, 44), (120, 48, 110, 44)]
    drawn = [f'<rect x="8" y="6" width="224" height="88" fill="none" stroke="{INK}" stroke-width="2"/>']
    for index, (x, y, w, h) in enumerate(zones):
        value = rng.uniform(19, 26)
        color = BAD if value > 24.5 else (WARN if value > 23 else OK)
        drawn.append(f'<rect class="zone" x="{x}" y="{y}" width="{w}" height="{h}" fill="{color}" fill-opacity="0.25" stroke="{MUTED}"/>'
                     + svg_text(x + w / 2, y + h / 2 + 3, f"Z{index + 1} {value:.1f}°", 8, INK, "middle"))
    return "".join(drawn)


def _status_grid(rng: random.Random, names: list[str]) -> str:
    tiles = []
    for index in range(12):
        state = rng.choices(("RUN", "OFF", "FAULT"), weights=(7, 3, 1))[0]
        color = {"RUN": OK, "OFF": MUTED, "FAULT": BAD}[state]
        x, y = 8 + (index % 4) * 57, 8 + (index // 4) * 29
        label = names[index % len(names)][:9] if names else f"unit {index + 1}"
        tiles.append(f'<rect class="tile" x="{x}" y="{y}" width="53" height="25" rx="3" fill="{color}" fill-opacity="0.85"/>'
                     + svg_text(x + 26.5, y + 11, label, 7, "#fff", "middle") + svg_text(x + 26.5, y + 21, state, 7, "#fff", "middle", "bold"))
    return "".join(tiles)


def _scatter_plot(rng: random.Random, names: list[str]) -> str:
    slope = rng.uniform(0.4, 0.9)
    dots = []
    for _ in range(30):
        x = rng.uniform(0.05, 0.95)
        y = min(0.95, max(0.05, slope * x + rng.uniform(-0.15, 0.15) + 0.05))
        dots.append(f'<circle class="dot" cx="{22 + x * 208:.1f}" cy="{82 - y * 72:.1f}" r="2.5" fill="{ACCENT}" fill-opacity="0.8"/>')
    x_label = names[0][:24] if names else "x"
    y_label = names[1][:24] if len(names) > 1 else "y"
    return _axes() + "".join(dots) + svg_text(232, 95, x_label, 7, anchor="end") + svg_text(24, 8, y_label, 7)


def _event_timeline(rng: random.Random, names: list[str]) -> str:
    events = sorted(rng.uniform(0.03, 0.97) for _ in range(6))
    marks = [f'<line x1="10" y1="50" x2="230" y2="50" stroke="{MUTED}" stroke-width="2"/>']
    for index, position in enumerate(events):
        x = 10 + position * 220
        color = (ACCENT, WARN, BAD)[index % 3]
        y = 30 if index % 2 else 70
        marks.append(f'<line x1="{x:.1f}" y1="50" x2="{x:.1f}" y2="{y}" stroke="{color}"/><circle class="event" cx="{x:.1f}" cy="50" r="4" fill="{color}"/>'
                     + svg_text(x, y - 3 if y < 50 else y + 9, f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}", 7, anchor="middle"))
    return "".join(marks) + svg_text(10, 96, "-7 d", 7) + svg_text(230, 96, "now", 7, anchor="end")


def _unknown(rng: random.Random, names: list[str]) -> str:
    return (f'<rect x="10" y="10" width="220" height="80" fill="none" stroke="{MUTED}" stroke-dasharray="4 3"/>'
            + svg_text(120, 54, "no preview for this widget type", 9, anchor="middle"))


DRAWINGS: dict[str, Callable[[random.Random, list[str]], str]] = {
    "line_chart": _line_chart, "kpi_card": _kpi_card, "gauge": _gauge, "bar_chart": _bar_chart, "pie_chart": _pie_chart,
    "table": _table, "alarm_list": _alarm_list, "heatmap": _heatmap, "floor_map": _floor_map, "status_grid": _status_grid,
    "scatter_plot": _scatter_plot, "event_timeline": _event_timeline,
}


def widget_preview_svg(widget: str, fixture_names: list[str], seed: str = "", widget_name: str = "") -> str:
    """An SVG picture of `widget` showing made-up sample data for `fixture_names`."""
    rng = random.Random(f"{widget}|{seed}")
    drawing = DRAWINGS.get(widget, _unknown)
    return _svg(widget, f"{widget_name or widget} preview with sample data", drawing(rng, list(fixture_names)))
