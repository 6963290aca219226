"""Widget previews: every widget type drawn as its own kind of picture, as valid SVG, with names escaped."""
import xml.etree.ElementTree as ElementTree

import pytest

from feedback.demo import WIDGETS
from feedback.models import Entry
from feedback.previews import DRAWINGS, widget_preview_svg

SVG = "{http://www.w3.org/2000/svg}"
# What makes each picture that widget: the elements (by class) it must have, at least how many.
SHAPES = {
    "line_chart": ("series", 1), "kpi_card": (None, 0), "gauge": ("needle", 1), "bar_chart": ("bar", 5), "pie_chart": ("slice", 4),
    "table": ("row", 4), "alarm_list": ("row", 4), "heatmap": ("cell", 84), "floor_map": ("zone", 5), "status_grid": ("tile", 12),
    "scatter_plot": ("dot", 30), "event_timeline": ("event", 6),
}


def parse(svg: str) -> ElementTree.Element:
    return ElementTree.fromstring(svg)


@pytest.mark.parametrize("widget", [w for w, _name, _description in WIDGETS])
def test_every_demo_widget_type_has_its_own_drawing(widget):
    assert widget in DRAWINGS
    root = parse(widget_preview_svg(widget, ["Chiller 1 supply temp", "AHU-2 fan status"], seed="e1"))
    assert root.tag == f"{SVG}svg" and root.get("data-widget") == widget and root.get("role") == "img"
    css_class, minimum = SHAPES[widget]
    if css_class:
        assert len([e for e in root.iter() if e.get("class") == css_class]) >= minimum
    if widget == "kpi_card":
        assert any(e.get("font-size") == "34" for e in root.iter(f"{SVG}text"))


def test_the_drawings_differ_from_each_other_and_stay_the_same_for_one_entry():
    pictures = {widget: widget_preview_svg(widget, ["Main meter"], seed="e1") for widget in DRAWINGS}
    assert len(set(pictures.values())) == len(DRAWINGS)
    assert widget_preview_svg("line_chart", ["Main meter"], seed="e1") == pictures["line_chart"]
    assert widget_preview_svg("line_chart", ["Main meter"], seed="e2") != pictures["line_chart"]


def test_an_unknown_widget_gets_a_placeholder_and_names_are_escaped():
    root = parse(widget_preview_svg("hologram", ["<script>alert(1)</script>"], widget_name="Hologram & co"))
    assert "no preview" in "".join(root.itertext())
    svg = widget_preview_svg("table", ["<script>alert(1)</script>"])
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    parse(svg)


def test_the_rating_and_compare_pages_draw_the_entry_s_widget(demo_db, rater, client):
    client.force_login(rater)
    page = client.get("/rate/").content.decode()
    entry = Entry.objects.order_by("scenario__external_id", "external_id").first()
    assert f'<svg class="widget-svg" data-widget="{entry.widget.slug}"' in page
    compare = client.get(f"/rate/scenario/{entry.scenario.external_id}/").content.decode()
    assert compare.count('<svg class="widget-svg"') == entry.scenario.entries.count()
