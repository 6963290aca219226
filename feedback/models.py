"""The feedback domain: scenarios, the widget and fixture catalogs, picks (entries) and ratings of them."""
from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class CatalogItem(models.Model):
    """An item of a catalog the model picks from, by its slug."""

    slug = models.SlugField(max_length=96, unique=True, help_text="Identifier the model answers with, e.g. line_chart.")
    name = models.CharField(max_length=160)
    description = models.TextField()

    class Meta:
        abstract = True
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class Widget(CatalogItem):
    """A widget type in the catalog (line chart, KPI card, alarm list, ...)."""


class Fixture(CatalogItem):
    """A data source a widget can show (a sensor, a meter, a work-order feed, ...)."""

    sites = models.JSONField(default=list, blank=True, help_text="Sites that have this fixture; empty: every site.")


class Scenario(models.Model):
    """An operator situation: the question asked and its context."""

    external_id = models.CharField(max_length=64, unique=True)
    query = models.TextField(help_text="The operator's question, as asked.")
    site = models.CharField(max_length=120, blank=True)
    role = models.CharField(max_length=80, blank=True)
    time_range = models.CharField(max_length=80, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["external_id"]

    def __str__(self) -> str:
        return f"{self.external_id}: {self.query[:60]}"


class Entry(models.Model):
    """One pick for a scenario: a widget and the fixtures it shows."""

    class Source(models.TextChoices):
        SIMULATION = "simulation", "Exhaustive simulation"
        MODEL = "model", "Model output"
        PRODUCTION = "production", "Production app"
        IMPORT = "import", "Imported file"

    external_id = models.CharField(max_length=128, unique=True)
    scenario = models.ForeignKey(Scenario, on_delete=models.CASCADE, related_name="entries")
    widget = models.ForeignKey(Widget, on_delete=models.PROTECT, related_name="entries")
    fixtures = models.ManyToManyField(Fixture, related_name="entries")
    title = models.CharField(max_length=200, blank=True)
    raw_output = models.TextField(blank=True, help_text="The model's answer as it came, if a model made this pick.")
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.SIMULATION)
    model_version = models.CharField(max_length=120, blank=True, help_text="Which model made the pick, if any.")
    confidence = models.FloatField(
        null=True, blank=True,
        help_text="The probability the serving engine gave the chosen widget's tokens, where it reports log-probabilities.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["scenario__external_id", "external_id"]
        verbose_name_plural = "entries"
        indexes = [models.Index(fields=["scenario", "widget"]), models.Index(fields=["source"])]

    def __str__(self) -> str:
        return self.external_id

    def fixture_slugs(self) -> list[str]:
        return sorted(f.slug for f in self.fixtures.all())


class RaterProfile(models.Model):
    """What the training side needs to know about a rater beyond the user account."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="rater_profile")
    trusted = models.BooleanField(default=True, help_text="Ratings from untrusted raters are kept but left out of training.")
    simulated = models.BooleanField(default=False, help_text="A simulated rater (demo data), not a person.")

    def __str__(self) -> str:
        return f"{self.user} ({'trusted' if self.trusted else 'untrusted'})"


class Rating(models.Model):
    """One rater's verdict on an entry; rating again updates it."""

    class Value(models.TextChoices):
        UP = "up", "Thumbs up"
        DOWN = "down", "Thumbs down"

    entry = models.ForeignKey(Entry, on_delete=models.CASCADE, related_name="ratings")
    rater = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="ratings")
    value = models.CharField(max_length=4, choices=Value.choices)
    tags = models.JSONField(default=list, blank=True)
    notes = models.TextField(blank=True)
    corrected_widget = models.ForeignKey(
        Widget, null=True, blank=True, on_delete=models.PROTECT, related_name="corrections",
        help_text="The widget the rater says should have been picked.",
    )
    corrected_fixtures = models.ManyToManyField(Fixture, blank=True, related_name="corrections")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["entry", "rater"], name="one_rating_per_entry_per_rater"),
            models.CheckConstraint(condition=Q(value__in=["up", "down"]), name="rating_value_up_or_down"),
        ]
        indexes = [
            models.Index(fields=["rater", "entry"]),
            models.Index(fields=["created_at"]),
            models.Index(fields=["value"]),
        ]

    def __str__(self) -> str:
        return f"{self.rater} {self.value} {self.entry}"

    @property
    def has_correction(self) -> bool:
        return self.corrected_widget_id is not None
