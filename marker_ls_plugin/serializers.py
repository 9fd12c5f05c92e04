"""REST representations of runs and models."""

from rest_framework import serializers

from marker_ls_plugin.models import FineTuneRun, OCRModel


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
                  "total_steps", "epoch", "progress", "metrics", "log_tail", "error", "queue_backend", "job_id",
                  "worker", "heartbeat_at", "cancel_requested", "created_at", "started_at", "finished_at",
                  "result_model")
        read_only_fields = fields

    def get_result_model(self, run):
        model = getattr(run, "result_model", None)
        return OCRModelSerializer(model).data if model else None


class StartRunSerializer(serializers.Serializer):
    config = serializers.DictField(required=False, default=dict)
    base_model = serializers.PrimaryKeyRelatedField(queryset=OCRModel.objects.all(), required=False, allow_null=True)


class ProjectOCRSettingsSerializer(serializers.Serializer):
    """PATCH body of a project's OCR settings; every field is optional, unknown ones are refused."""

    active_model = serializers.PrimaryKeyRelatedField(queryset=OCRModel.objects.all(), required=False,
                                                      allow_null=True)
    preannotate = serializers.BooleanField(required=False)
    retrain_every = serializers.IntegerField(required=False, allow_null=True, min_value=1)

    def validate(self, attrs):
        unknown = sorted(set(self.initial_data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return attrs
