from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from backend.metrics import healthz, metrics, readyz
from rl.api import PickView
from rl.views import dashboard

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="feedback:rate", permanent=False)),
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("rate/", include("feedback.urls")),
    path("runs/", dashboard, name="dashboard"),
    path("api/picks/", PickView.as_view(), name="api-picks"),
    path("api/", include("feedback.api_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics, name="metrics"),
]


def api_aware_page_not_found(request, exception=None):
    """Unknown URLs under /api/ answer JSON like the API's own 404s; the rest get Django's page."""
    from django.http import JsonResponse
    from django.views.defaults import page_not_found

    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=404)
    return page_not_found(request, exception)


handler404 = api_aware_page_not_found
