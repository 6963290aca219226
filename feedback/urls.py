from django.urls import path

from feedback import views

app_name = "feedback"

urlpatterns = [
    path("", views.rate_next, name="rate"),
    path("entry/<str:external_id>/", views.rate_entry, name="entry"),
    path("entry/<str:external_id>/skip/", views.rate_skip, name="skip"),
    path("scenario/<str:external_id>/", views.compare_scenario, name="compare"),
]
