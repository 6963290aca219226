from django.urls import path
from rest_framework.routers import DefaultRouter

from feedback import api

router = DefaultRouter()
router.register("widgets", api.WidgetViewSet)
router.register("fixtures", api.FixtureViewSet)
router.register("scenarios", api.ScenarioViewSet)
router.register("entries", api.EntryViewSet)
router.register("ratings", api.RatingViewSet, basename="rating")

urlpatterns = [path("feedback/", api.FeedbackView.as_view(), name="api-feedback"), *router.urls]
