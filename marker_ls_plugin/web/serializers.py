"""REST representations of runs and models."""

from rest_framework import serializers

from marker_ls_plugin.models import FineTuneRun, OCRModel
from marker_ls_plugin.ocr.availability import ENGINE_CHOICES
from marker_ls_plugin.training.config import InvalidTrainingArguments, TrainingArguments


class ProjectModelField(serializers.PrimaryKeyRelatedField):
    """The id of a model the project may use (``context["project"]``); another organization's reads as unknown."""

    def get_queryset(self):
        return OCRModel.objects.for_project(self.context["project"])


class OCRModelSerializer(serializers.ModelSerializer):
    class Meta:
        model = OCRModel
        fields = ("id", "name", "engine", "checkpoint", "kind", "parent", "produced_by_run", "metrics",
                  "dataset_sha256", "created_at")


class FineTuneRunSerializer(serializers.ModelSerializer):
    result_model = serializers.SerializerMethodField()

    class Meta:
        model = FineTuneRun
        fields = ("id", "project", "base_model", "started_by", "trigger", "status", "config", "dataset", "step",
                  "total_steps", "epoch", "progress", "metrics", "log_tail", "error", "traceback", "retryable",
                  "retry_of", "queue_backend", "job_id", "worker", "heartbeat_at", "cancel_requested", "created_at",
                  "started_at", "finished_at", "result_model")
        read_only_fields = fields

    def get_result_model(self, run):
        model = getattr(run, "result_model", None)
        return OCRModelSerializer(model).data if model else None


class StartRunSerializer(serializers.Serializer):
    config = serializers.DictField(required=False, default=dict)
    base_model = ProjectModelField(required=False, allow_null=True)

    def validate_config(self, value):
        try:
            return TrainingArguments.from_dict(value).to_dict()
        except InvalidTrainingArguments as exc:  # one message per argument, each naming it
            raise serializers.ValidationError(list(exc.errors.values())) from exc


class ProjectOCRSettingsSerializer(serializers.Serializer):
    """PATCH body of a project's OCR settings; every field is optional, unknown ones are refused."""

    active_model = ProjectModelField(required=False, allow_null=True)
    regenerate_ml_token = serializers.BooleanField(
        required=False, help_text="true: replace the project's HTTP ML backend password (the old one stops working)."
    )
    preannotate = serializers.BooleanField(required=False)
    engine = serializers.ChoiceField(
        choices=ENGINE_CHOICES, required=False,
        help_text="The project's engine (and no active model); auto: the site's engine, MARKER_LS_ENGINE.",
    )
    # The model field's range in PostgreSQL (what the admin's form enforces too): beyond it the save fails.
    retrain_every = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=2**31 - 1)

    def validate(self, attrs):
        unknown = sorted(set(self.initial_data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return attrs
