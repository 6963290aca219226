from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from feedback.models import Entry, Fixture, RaterProfile, Rating, Scenario, Widget
from feedback.selectors import feedback_ratings_export, rater_agreement


class TagListFilter(admin.SimpleListFilter):
    title = "tag"
    parameter_name = "tag"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        tags = sorted({tag for tags in Rating.objects.values_list("tags", flat=True) for tag in tags})
        return [(tag, tag) for tag in tags]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Rating]) -> QuerySet[Rating]:
        if self.value():
            # JSON containment is not available on SQLite; the quoted string match works on both backends.
            return queryset.filter(tags__icontains=f'"{self.value()}"')
        return queryset


@admin.action(description="Export selected ratings as JSON (ratings file format)")
def export_ratings_json(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Rating]) -> HttpResponse:
    payload = feedback_ratings_export(queryset).model_dump_json(indent=1)
    response = HttpResponse(payload, content_type="application/json")
    response["Content-Disposition"] = 'attachment; filename="ratings.json"'
    return response


class RatingInline(admin.TabularInline):
    model = Rating
    extra = 0
    fields = ("rater", "value", "tags", "notes", "corrected_widget", "created_at")
    readonly_fields = ("created_at",)
    show_change_link = True


@admin.register(Rating)
class RatingAdmin(admin.ModelAdmin):
    list_display = ("entry", "widget", "value", "rater", "tags", "short_notes", "created_at")
    list_filter = ("value", TagListFilter, "entry__widget", "entry__source", "rater", "created_at")
    search_fields = ("entry__scenario__query", "notes", "entry__external_id")
    list_select_related = ("entry__widget", "rater")
    autocomplete_fields = ("entry", "corrected_widget")
    filter_horizontal = ("corrected_fixtures",)
    date_hierarchy = "created_at"
    actions = [export_ratings_json]

    @admin.display(ordering="entry__widget__slug")
    def widget(self, rating: Rating) -> str:
        return rating.entry.widget.slug

    @admin.display(description="notes")
    def short_notes(self, rating: Rating) -> str:
        return rating.notes[:80]


@admin.register(Entry)
class EntryAdmin(admin.ModelAdmin):
    list_display = ("external_id", "scenario", "widget", "source", "model_version", "pick_confidence", "created_at")
    list_filter = ("widget", "source", "ratings__value")
    search_fields = ("external_id", "scenario__query", "title")
    list_select_related = ("scenario", "widget")
    autocomplete_fields = ("scenario", "widget")
    filter_horizontal = ("fixtures",)
    inlines = [RatingInline]

    @admin.display(description="confidence", ordering="confidence", empty_value="-")
    def pick_confidence(self, entry: Entry) -> str | None:
        """The serving engine's probability of the chosen widget, where it reported one."""
        return None if entry.confidence is None else f"{entry.confidence:.0%}"


@admin.register(Scenario)
class ScenarioAdmin(admin.ModelAdmin):
    list_display = ("external_id", "query", "site", "role", "time_range")
    list_filter = ("site", "role")
    search_fields = ("external_id", "query")


@admin.register(Widget)
class WidgetAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "description")
    search_fields = ("slug", "name", "description")


@admin.register(Fixture)
class FixtureAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "description", "sites")
    search_fields = ("slug", "name", "description")


@admin.action(description="Trust: their ratings train models")
def trust_raters(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[RaterProfile]) -> None:
    queryset.update(trusted=True)


@admin.action(description="Untrust: keep their ratings but leave them out of training")
def untrust_raters(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[RaterProfile]) -> None:
    queryset.update(trusted=False)


@admin.register(RaterProfile)
class RaterProfileAdmin(admin.ModelAdmin):
    """Raters with their agreement with the majority of the other raters of the same entries: a careless or hostile
    rater stands out with a low agreement; untrust them and their ratings stay stored but stop training."""

    list_display = ("user", "trusted", "simulated", "agreement_with_majority")
    list_filter = ("trusted", "simulated")
    search_fields = ("user__username",)
    actions = [trust_raters, untrust_raters]

    def get_changelist(self, request: HttpRequest, **kwargs) -> type[ChangeList]:
        return RaterAgreementChangeList

    @admin.display(description="agreement with majority")
    def agreement_with_majority(self, profile: RaterProfile) -> str:
        agreement = getattr(profile, "agreement", None)
        return f"{agreement} ({agreement.ratings} ratings)" if agreement else "no ratings"


class RaterAgreementChangeList(ChangeList):
    """The listed raters' agreement, computed in one pass over their entries' ratings instead of once per row."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        self.result_list = list(self.result_list)
        agreement = rater_agreement([profile.user_id for profile in self.result_list])
        for profile in self.result_list:
            profile.agreement = agreement.get(profile.user_id)
