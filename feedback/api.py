"""The REST API: read the catalogs and scenarios, record picks from the production app, rate them."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, permissions, serializers, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from feedback.models import Entry, Fixture, Rating, Scenario, Widget
from feedback.services import entry_create, feedback_submit, rating_submit
from feedback.throttling import WriteRateThrottle
from feedback.validation import FeedbackValidationError, clean_rating


class WidgetSerializer(serializers.ModelSerializer):
    class Meta:
        model = Widget
        fields = ["slug", "name", "description"]


class FixtureSerializer(serializers.ModelSerializer):
    class Meta:
        model = Fixture
        fields = ["slug", "name", "description"]


class ScenarioSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="external_id", read_only=True)

    class Meta:
        model = Scenario
        fields = ["id", "query", "site", "role", "time_range"]


class EntrySerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="external_id", max_length=128)
    scenario = serializers.SlugRelatedField(slug_field="external_id", queryset=Scenario.objects.all())
    widget = serializers.SlugRelatedField(slug_field="slug", queryset=Widget.objects.all())
    fixtures = serializers.SlugRelatedField(slug_field="slug", queryset=Fixture.objects.all(), many=True, allow_empty=False)

    class Meta:
        model = Entry
        fields = ["id", "scenario", "widget", "fixtures", "title", "raw_output", "source", "model_version", "created_at"]
        read_only_fields = ["created_at"]

    def validate_id(self, value: str) -> str:
        if Entry.objects.filter(external_id=value).exists():
            raise serializers.ValidationError(f"an entry with id {value!r} exists already")
        return value


class RatingSerializer(serializers.ModelSerializer):
    """A rating as the API shows it; writes go through `clean_rating`, the one set of rating rules."""

    entry_id = serializers.SlugRelatedField(source="entry", slug_field="external_id", queryset=Entry.objects.all())
    rating = serializers.CharField(source="value")
    tags = serializers.ListField(child=serializers.CharField(), required=False)
    notes = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    corrected_widget = serializers.CharField(required=False, allow_null=True, allow_blank=True)
    corrected_fixtures = serializers.ListField(child=serializers.CharField(), required=False)
    rater = serializers.CharField(source="rater.username", read_only=True)

    class Meta:
        model = Rating
        fields = ["id", "entry_id", "rating", "tags", "notes", "corrected_widget", "corrected_fixtures", "rater", "created_at", "updated_at"]
        read_only_fields = ["id", "rater", "created_at", "updated_at"]

    def to_representation(self, rating: Rating) -> dict:
        return {
            "id": rating.id, "entry_id": rating.entry.external_id, "rating": rating.value, "tags": rating.tags,
            "notes": rating.notes, "corrected_widget": rating.corrected_widget.slug if rating.corrected_widget else None,
            "corrected_fixtures": sorted(f.slug for f in rating.corrected_fixtures.all()), "rater": rating.rater.username,
            "created_at": rating.created_at.isoformat(), "updated_at": rating.updated_at.isoformat(),
        }

    def validate(self, attrs: dict) -> dict:
        try:
            attrs["rating_input"] = clean_rating(
                attrs.get("value"), attrs.get("tags"), attrs.get("notes"),
                attrs.get("corrected_widget"), attrs.get("corrected_fixtures"),
            )
        except FeedbackValidationError as exc:
            raise serializers.ValidationError({exc.field: exc.message}) from exc
        return attrs

    def save_for(self, rater) -> tuple[Rating, bool]:
        try:
            return rating_submit(entry=self.validated_data["entry"], rater=rater, rating_input=self.validated_data["rating_input"])
        except FeedbackValidationError as exc:
            raise serializers.ValidationError({exc.field: exc.message}) from exc


class FeedbackSerializer(RatingSerializer):
    """The shape the production app sends: `{entry_id, rating, tags, notes}`."""

    class Meta(RatingSerializer.Meta):
        fields = ["entry_id", "rating", "tags", "notes", "corrected_widget", "corrected_fixtures"]


class WidgetViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = Widget.objects.all()
    serializer_class = WidgetSerializer
    lookup_field = "slug"


class FixtureViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = Fixture.objects.all()
    serializer_class = FixtureSerializer
    lookup_field = "slug"


class ScenarioViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = Scenario.objects.all()
    serializer_class = ScenarioSerializer
    lookup_field = "external_id"
    lookup_url_kwarg = "id"


class EntryViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Picks. The production app creates one for each answer it shows (this needs the feedback.add_entry permission:
    give it to the production app's account or group, not to raters); anyone signed in can read them."""

    permission_classes = [permissions.DjangoModelPermissions]
    throttle_classes = [WriteRateThrottle]
    throttle_scope = "entries"
    queryset = Entry.objects.select_related("scenario", "widget").prefetch_related("fixtures")
    serializer_class = EntrySerializer
    lookup_field = "external_id"
    lookup_url_kwarg = "id"

    def perform_create(self, serializer: EntrySerializer) -> None:
        data = serializer.validated_data
        serializer.instance = entry_create(
            external_id=data["external_id"], scenario=data["scenario"], widget=data["widget"], fixtures=data["fixtures"],
            title=data.get("title", ""), raw_output=data.get("raw_output", ""),
            source=data.get("source", Entry.Source.PRODUCTION), model_version=data.get("model_version", ""),
        )


class RatingViewSet(mixins.CreateModelMixin, mixins.UpdateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Your own ratings. Creating a rating for an entry you rated already replaces it."""

    serializer_class = RatingSerializer
    permission_classes = [permissions.IsAuthenticated]
    throttle_classes = [WriteRateThrottle]
    throttle_scope = "ratings"
    queryset = Rating.objects.none()  # for the schema's path parameter type; get_queryset gives each rater their own

    def get_queryset(self):
        return (
            Rating.objects.filter(rater=self.request.user)
            .select_related("entry", "rater", "corrected_widget").prefetch_related("corrected_fixtures")
        )

    def create(self, request: Request, *args, **kwargs) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        rating, created = serializer.save_for(request.user)
        return Response(RatingSerializer(rating).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    def update(self, request: Request, *args, **kwargs) -> Response:
        rating = self.get_object()
        data = {"entry_id": rating.entry.external_id, **request.data}
        serializer = self.get_serializer(data=data)
        serializer.is_valid(raise_exception=True)
        if serializer.validated_data["entry"] != rating.entry:
            raise serializers.ValidationError({"entry_id": "a rating cannot move to another entry"})
        rating, _ = serializer.save_for(request.user)
        return Response(RatingSerializer(rating).data)


class FeedbackView(APIView):
    """Thumbs up or down on an entry, as sent by the production app."""

    permission_classes = [permissions.IsAuthenticated]
    throttle_classes = [WriteRateThrottle]
    throttle_scope = "ratings"

    @extend_schema(request=FeedbackSerializer, responses={200: RatingSerializer, 201: RatingSerializer})
    def post(self, request: Request) -> Response:
        try:
            rating, created = feedback_submit(rater=request.user, feedback=request.data)
        except FeedbackValidationError as exc:
            raise serializers.ValidationError({exc.field: [exc.message]}) from exc
        return Response(RatingSerializer(rating).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)
