from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from feedback.demo import build_demo
from feedback.files import FeedbackData, FeedbackRatings
from feedback.services import feedback_import


@pytest.fixture
def demo_files() -> tuple[FeedbackData, FeedbackRatings]:
    """A small demo (12 scenarios) as the two import files."""
    return build_demo(seed=3, scenario_count=12)


@pytest.fixture
def demo_db(db, demo_files):
    data, ratings = demo_files
    feedback_import(data, ratings)
    return demo_files


@pytest.fixture
def rater(db):
    return get_user_model().objects.create_user("alice", password="alice-password-123")


@pytest.fixture
def api(rater) -> APIClient:
    client = APIClient()
    client.force_authenticate(rater)
    return client
