"""The staff dashboard: training runs, evaluations, model versions and gates, the online learner, served up-rates."""
from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from rl.dashboard import dashboard_context


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    if not request.user.is_staff:
        raise PermissionDenied("The training dashboard is for staff.")
    return render(request, "rl/dashboard.html", dashboard_context())
