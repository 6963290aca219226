from django import template
from django.utils.safestring import SafeString, mark_safe

from feedback.models import Entry
from feedback.previews import widget_preview_svg

register = template.Library()


@register.simple_tag
def widget_preview(entry: Entry) -> SafeString:
    """The entry's widget drawn as SVG with sample data (every interpolated text is escaped in feedback.previews)."""
    return mark_safe(widget_preview_svg(entry.widget.slug, [f.name for f in entry.fixtures.all()], entry.external_id, entry.widget.name))
