"""The dashboard's pictures as server-rendered SVG: metric curves over training steps, base against tuned bars, and
up-rates with their confidence intervals. Hand-drawn like the widget previews (a few shapes each; no chart library
on the page)."""
from __future__ import annotations

from django.utils.html import escape

from feedback.previews import svg_text

COLORS = ("#1f5fa8", "#d98c1a", "#1f8a4c", "#8e44ad")
MUTED, GRID, LIVE = "#8796a5", "#dde3ea", "#1f8a4c"


def _frame(width: int, height: int, label: str, body: str, css_class: str) -> str:
    return (f'<svg class="chart {css_class}" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
            f'aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg"><title>{escape(label)}</title>{body}</svg>')


def line_chart(series: dict[str, list[tuple[float, float]]], *, title: str, width: int = 320, height: int = 150,
               y_range: tuple[float, float] | None = None) -> str:
    """Curves of (step, value) per series name, with the y range written at the axis and a legend."""
    points = [p for values in series.values() for p in values]
    if not points:
        return _frame(width, height, f"{title}: nothing logged", svg_text(width / 2, height / 2, "nothing logged yet", 10, anchor="middle"), "line-chart empty")
    left, right, top, bottom = 42, width - 8, 18, height - 22
    x_min, x_max = min(p[0] for p in points), max(p[0] for p in points)
    y_min, y_max = y_range or (min(p[1] for p in points), max(p[1] for p in points))
    x_span, y_span = (x_max - x_min) or 1.0, (y_max - y_min) or 1.0

    def xy(x: float, y: float) -> str:
        return f"{left + (x - x_min) / x_span * (right - left):.1f},{bottom - (y - y_min) / y_span * (bottom - top):.1f}"

    body = [svg_text(left, 12, title, 10, "#1d2733", weight="bold"),
            f'<polyline points="{left},{top} {left},{bottom} {right},{bottom}" fill="none" stroke="{MUTED}"/>',
            svg_text(left - 4, top + 4, f"{y_max:.3g}", 8, anchor="end"), svg_text(left - 4, bottom, f"{y_min:.3g}", 8, anchor="end"),
            svg_text(left, height - 8, f"step {x_min:g}", 8), svg_text(right, height - 8, f"step {x_max:g}", 8, anchor="end")]
    for index, (name, values) in enumerate(series.items()):
        color = COLORS[index % len(COLORS)]
        if len(values) == 1:
            body.append(f'<circle class="series" cx="{xy(*values[0]).split(",")[0]}" cy="{xy(*values[0]).split(",")[1]}" r="3" fill="{color}"/>')
        elif values:
            body.append(f'<polyline class="series" data-series="{escape(name)}" points="{" ".join(xy(x, y) for x, y in values)}" '
                        f'fill="none" stroke="{color}" stroke-width="1.8"/>')
        body.append(svg_text(right - 4 - 90 * (len(series) - 1 - index), 12, name, 8, color, "end"))
    return _frame(width, height, title, "".join(body), "line-chart")


def paired_bars(rows: list[tuple[str, float | None, float | None]], *, title: str, width: int = 320) -> str:
    """Base (grey) against tuned (blue) per metric, on a 0-1 scale."""
    row_height = 22
    height = 24 + row_height * len(rows)
    left, right = 150, width - 34
    body = [svg_text(8, 12, title, 10, "#1d2733", weight="bold"), svg_text(right, 12, "base", 8, MUTED, "end"),
            svg_text(right + 30, 12, "tuned", 8, COLORS[0], "end")]
    for index, (label, base, tuned) in enumerate(rows):
        y = 20 + index * row_height
        body.append(svg_text(8, y + 12, label, 8, "#1d2733"))
        for offset, value, color in ((0, base, MUTED), (9, tuned, COLORS[0])):
            if value is None:
                continue
            length = max(0.0, min(1.0, value)) * (right - left)
            body.append(f'<rect class="bar" x="{left}" y="{y + offset}" width="{length:.1f}" height="8" fill="{color}"/>')
            body.append(svg_text(left + length + 3, y + offset + 7, f"{value:.2f}", 7, color))
    return _frame(width, height, title, "".join(body), "paired-bars")


def interval_chart(rows: list[tuple[str, float | None, float, float, int, bool]], *, title: str, width: int = 460) -> str:
    """One row per model version: its up-rate as a dot, the 95% interval as a whisker, n beside it; live in green."""
    row_height = 20
    height = 30 + row_height * max(1, len(rows))
    left, right = 190, width - 50
    body = [svg_text(8, 12, title, 10, "#1d2733", weight="bold"), svg_text(left, height - 4, "0%", 8),
            svg_text(right, height - 4, "100%", 8, anchor="end"),
            f'<line x1="{(left + right) / 2}" y1="18" x2="{(left + right) / 2}" y2="{height - 12}" stroke="{GRID}"/>']
    if not rows:
        body.append(svg_text(left, 34, "no served picks rated yet", 9))
    for index, (label, rate, low, high, n, live) in enumerate(rows):
        y = 28 + index * row_height
        color = LIVE if live else COLORS[0]
        body.append(svg_text(8, y + 4, label[:36] + (" (live)" if live else ""), 8, color, weight="bold" if live else "normal"))
        if rate is None:
            body.append(svg_text(left, y + 4, "no ratings", 8))
            continue
        x_low, x_high, x_rate = (left + v * (right - left) for v in (low, high, rate))
        body.append(f'<line class="interval" x1="{x_low:.1f}" y1="{y}" x2="{x_high:.1f}" y2="{y}" stroke="{color}" stroke-width="2"/>'
                    f'<circle class="rate" cx="{x_rate:.1f}" cy="{y}" r="4" fill="{color}"/>')
        body.append(svg_text(right + 4, y + 3, f"{rate:.0%} n={n}", 8, color))
    return _frame(width, height, title, "".join(body), "interval-chart")
