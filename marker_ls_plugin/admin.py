"""Admin pages for the registry, the runs, and a project list with a "start a run" action."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import Count
from django.urls import reverse
from django.utils.html import format_html

from marker_ls_plugin import runs
from marker_ls_plugin.models import FineTuneRun, OCRModel, OCRProject, ProjectConfig
from marker_ls_plugin.training.config import TrainingArguments


@admin.register(OCRModel)
class OCRModelAdmin(admin.ModelAdmin):
    list_display = ("name", "engine", "kind", "parent", "cer", "active_projects", "created_at", "created_by")
    list_filter = ("engine", "kind", "created_at")
    search_fields = ("name", "checkpoint", "description")
    raw_id_fields = ("parent", "produced_by_run", "created_by")
    readonly_fields = ("created_at",)

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_active=Count("active_in"))

    @admin.display(description="active in", ordering="_active")
    def active_projects(self, obj):
        return obj._active

    @admin.display(description="CER")
    def cer(self, obj):
        value = (obj.metrics or {}).get("cer")
        return f"{value:.2%}" if isinstance(value, (int, float)) else "-"

    def save_model(self, request, obj, form, change):
        if not change and obj.created_by_id is None:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)


class StartRunForm(forms.ModelForm):
    """The add form of a run: choosing a project and arguments starts it through runs.start_run."""

    class Meta:
        model = FineTuneRun
        fields = ("project", "base_model", "config")

    def clean_config(self):
        config = self.cleaned_data.get("config") or {}
        try:
            return TrainingArguments.from_dict(config).to_dict()
        except (TypeError, ValueError) as exc:
            raise forms.ValidationError(str(exc)) from exc


@admin.register(FineTuneRun)
class FineTuneRunAdmin(admin.ModelAdmin):
    list_display = ("id", "project", "status", "percent", "trigger", "base_model", "result", "started_by",
                    "created_at", "finished_at")
    list_filter = ("status", "trigger", "queue_backend", "created_at")
    search_fields = ("project__title", "error", "job_id", "worker")
    list_select_related = ("project", "base_model", "started_by")
    actions = ("cancel_runs",)
    readonly_fields = ("status", "trigger", "started_by", "dataset", "step", "total_steps", "epoch", "progress",
                       "metrics", "log_tail", "error", "queue_backend", "job_id", "worker", "heartbeat_at",
                       "cancel_requested", "created_at", "started_at", "finished_at", "result")

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = StartRunForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("project", "base_model", "config")
        return ("project", "base_model", "config", *self.readonly_fields)

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else ("project", "base_model", "config", *self.readonly_fields)

    def get_changeform_initial_data(self, request):
        return {"config": TrainingArguments().to_dict()}

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        run, created = runs.start_run(
            obj.project, started_by=request.user, trigger=FineTuneRun.Trigger.ADMIN,
            config=obj.config, base_model=obj.base_model,
        )
        obj.pk = run.pk  # the admin redirects to the run that exists (new or already active)
        if not created:
            messages.warning(request, f"Project {run.project} already has an active run ({run.pk}).")

    def get_queryset(self, request):
        runs.reap_stale_runs()
        return super().get_queryset(request)

    @admin.display(description="progress", ordering="progress")
    def percent(self, obj):
        return f"{obj.progress:.0%}"

    @admin.display(description="resulting model")
    def result(self, obj):
        model = getattr(obj, "result_model", None)
        if model is None:
            return "-"
        url = reverse("admin:marker_ls_plugin_ocrmodel_change", args=[model.pk])
        return format_html('<a href="{}">{}</a>', url, model.name)

    @admin.action(description="Cancel selected runs")
    def cancel_runs(self, request, queryset):
        for run in queryset.filter(status__in=FineTuneRun.ACTIVE_STATUSES):
            runs.cancel_run(run)
        self.message_user(request, "Cancellation requested.")


class ProjectConfigInline(admin.StackedInline):
    model = ProjectConfig
    can_delete = False
    fields = ("active_model", "preannotate", "retrain_every")


@admin.register(OCRProject)
class OCRProjectAdmin(admin.ModelAdmin):
    list_display = ("id", "title", "organization", "tasks", "active_model", "retrain_every", "last_run", "created_at")
    search_fields = ("title", "description")
    list_filter = ("created_at",)
    fields = ("title",)
    readonly_fields = ("title",)
    inlines = (ProjectConfigInline,)
    actions = ("start_runs",)

    def has_add_permission(self, request):
        return False  # projects are created in Label Studio

    def has_delete_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("organization", "marker_ls_config__active_model")

    @admin.display(description="tasks")
    def tasks(self, obj):
        return obj.tasks.count()

    @admin.display(description="active model")
    def active_model(self, obj):
        config = getattr(obj, "marker_ls_config", None)
        return config.active_model if config and config.active_model else "-"

    @admin.display(description="retrain every")
    def retrain_every(self, obj):
        config = getattr(obj, "marker_ls_config", None)
        return f"{config.retrain_every} annotations" if config and config.retrain_every else "-"

    def save_formset(self, request, form, formset, change):
        # A new active model goes through runs.activate_model (which also queues its predictions), so
        # the inline saves the other fields and leaves active_model as it was.
        wanted = {}
        for inline in formset.forms:
            if formset.model is ProjectConfig and "active_model" in inline.changed_data:
                wanted[inline] = inline.cleaned_data["active_model"]
                inline.instance.active_model_id = inline.initial.get("active_model")
        super().save_formset(request, form, formset, change)
        for inline, model in wanted.items():
            runs.activate_model(inline.instance.project, model)
            self.message_user(request, f"{inline.instance.project.title}: active model is now {model or 'none'}.")

    @admin.display(description="last run")
    def last_run(self, obj):
        run = obj.marker_ls_runs.order_by("-created_at").first()
        if run is None:
            return "-"
        url = reverse("admin:marker_ls_plugin_finetunerun_change", args=[run.pk])
        return format_html('<a href="{}">{} ({})</a>', url, run.pk, run.status)

    @admin.action(description="Start a fine-tune run")
    def start_runs(self, request, queryset):
        for project in queryset:
            run, created = runs.start_run(project, started_by=request.user, trigger=FineTuneRun.Trigger.ADMIN)
            state = "started" if created else "already active"
            level = messages.SUCCESS if created else messages.WARNING
            self.message_user(request, f"{project.title}: run {run.pk} {state} ({run.status}).", level)
