"""The rating UI: one entry at a time, or every variant of a scenario side by side."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from feedback.models import Entry, Fixture, Rating, Scenario, Widget
from feedback.selectors import entry_next_unrated, rating_progress, scenario_variants
from feedback.services import rating_submit
from feedback.validation import FeedbackValidationError, clean_rating


def _render_entry(request: HttpRequest, entry: Entry | None, status: int = 200) -> HttpResponse:
    rated, total = rating_progress(request.user)
    existing = Rating.objects.filter(entry=entry, rater=request.user).first() if entry else None
    return render(
        request,
        "feedback/rate.html",
        {
            "entry": entry, "existing": existing, "rated": rated, "total": total,
            "widgets": Widget.objects.all(), "fixtures": Fixture.objects.all(),
        },
        status=status,
    )


@login_required
def rate_next(request: HttpRequest) -> HttpResponse:
    return _render_entry(request, entry_next_unrated(request.user))


@login_required
def rate_entry(request: HttpRequest, external_id: str) -> HttpResponse:
    entry = get_object_or_404(Entry.objects.select_related("scenario", "widget"), external_id=external_id)
    if request.method != "POST":
        return _render_entry(request, entry)
    try:
        rating_input = clean_rating(
            request.POST.get("rating"), request.POST.get("tags", ""), request.POST.get("notes", ""),
            request.POST.get("corrected_widget") or None, request.POST.getlist("corrected_fixtures"),
        )
        rating_submit(entry=entry, rater=request.user, rating_input=rating_input)
    except FeedbackValidationError as exc:
        messages.error(request, f"Not saved: {exc}")
        return _render_entry(request, entry, status=400)
    messages.success(request, f"Rated {entry.external_id} {rating_input.value}.")
    if request.POST.get("next") == "compare":
        return redirect("feedback:compare", external_id=entry.scenario.external_id)
    return redirect("feedback:rate")


@login_required
def rate_skip(request: HttpRequest, external_id: str) -> HttpResponse:
    current = get_object_or_404(Entry.objects.select_related("scenario"), external_id=external_id)
    entry = entry_next_unrated(request.user, after=current)
    if entry is None:
        return redirect("feedback:rate")
    return redirect("feedback:entry", external_id=entry.external_id)


@login_required
def compare_scenario(request: HttpRequest, external_id: str) -> HttpResponse:
    scenario = get_object_or_404(Scenario, external_id=external_id)
    return render(request, "feedback/compare.html", {"scenario": scenario, "variants": scenario_variants(scenario, request.user)})
