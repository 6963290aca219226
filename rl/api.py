"""The pick-serving endpoint Command Center calls: a question in, the live model's pick and its entry id out."""
from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import permissions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from feedback.models import Scenario
from feedback.throttling import WriteRateThrottle
from rl.serving.picks import ServingError, pick_widget


class CanServePicks(permissions.BasePermission):
    """Serving a pick creates an entry (training data), so it needs the permission to add entries."""

    message = "Serving picks needs the feedback.add_entry permission (the production app's account or group)."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return bool(request.user and request.user.is_authenticated and request.user.has_perm("feedback.add_entry"))


class PickRequestSerializer(serializers.Serializer):
    query = serializers.CharField(max_length=2000, help_text="The operator's question, as asked.")
    site = serializers.CharField(max_length=120, required=False, allow_blank=True, default="")
    role = serializers.CharField(max_length=80, required=False, allow_blank=True, default="")
    time_range = serializers.CharField(max_length=80, required=False, allow_blank=True, default="")
    scenario_id = serializers.CharField(max_length=64, required=False, help_text="Your id for this question; a new scenario is made if it is new. "
                                        "An existing id must come with the same query.")
    request_id = serializers.CharField(max_length=200, required=False, help_text="Routes the A/B split: the same id always goes to the same model.")

    def validate(self, attrs: dict) -> dict:
        existing = Scenario.objects.filter(external_id=attrs.get("scenario_id") or "").first()
        if existing is not None and existing.query != attrs["query"]:
            raise serializers.ValidationError({"scenario_id": f"scenario {existing.external_id!r} exists with another query"})
        attrs["scenario"] = existing or Scenario(external_id=attrs.get("scenario_id", ""), query=attrs["query"], site=attrs["site"],
                                                 role=attrs["role"], time_range=attrs["time_range"])
        return attrs


class PickResponseSerializer(serializers.Serializer):
    entry_id = serializers.CharField(help_text="Send feedback on this pick with this id (POST /api/feedback/).")
    scenario_id = serializers.CharField()
    widget = serializers.CharField()
    fixtures = serializers.ListField(child=serializers.CharField())
    title = serializers.CharField(allow_blank=True)
    model_version = serializers.CharField(help_text="The name (name:tag) of the model version that answered.")
    arm = serializers.ChoiceField(choices=["live", "candidate"], help_text="live, or candidate when the A/B candidate answered.")
    confidence = serializers.FloatField(allow_null=True, help_text="The engine's probability of the chosen widget; null where it reports no log-probabilities (Ollama).")


ERROR = inline_serializer("ServingErrorBody", {"error": serializers.CharField(), "detail": serializers.CharField()})


class PickView(APIView):
    """Ask the live model (or the A/B candidate) which widget and fixtures answer a question; the pick is stored as
    an entry whose id feedback refers to. Errors store nothing: 503 no live model or the serving engine unreachable,
    504 the engine timed out, 502 the engine refused or answered something that is not a pick."""

    permission_classes = [CanServePicks]
    throttle_classes = [WriteRateThrottle]
    throttle_scope = "picks"

    @extend_schema(request=PickRequestSerializer, responses={
        201: PickResponseSerializer, 400: OpenApiResponse(description="Invalid request; the body names the fields."),
        502: ERROR, 503: ERROR, 504: ERROR,
    })
    def post(self, request: Request) -> Response:
        serializer = PickRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            served = pick_widget(data["scenario"], request_key=data.get("request_id"))
        except ServingError as exc:
            return Response({"error": exc.code, "detail": str(exc)}, status=exc.http_status)
        body = {"entry_id": served.entry.external_id, "scenario_id": served.entry.scenario.external_id, "widget": served.pick.widget,
                "fixtures": list(served.pick.fixtures), "title": served.pick.title, "model_version": served.model_version, "arm": served.arm,
                "confidence": served.entry.confidence}
        return Response(PickResponseSerializer(body).data, status=status.HTTP_201_CREATED)
