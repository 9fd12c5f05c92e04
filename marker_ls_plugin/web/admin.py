"""Admin pages for the registry, the runs, and a project list with a "start a run" action."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, Q
from django.http import Http404
from django.urls import reverse
from django.utils.html import format_html

from marker_ls_plugin.domain import activation, preflight, runs
from marker_ls_plugin.models import (
    FineTuneRun,
    OCRModel,
    OCRProject,
    ProjectConfig,
    member_organization_id,
    projects_visible_to,
)
from marker_ls_plugin.training.config import InvalidTrainingArguments, TrainingArguments
from marker_ls_plugin.web.csrf import csrf_enforced


def sees_everything(request) -> bool:
    """Superusers administer the whole instance; every other staff user sees their organization only."""
    return request.user.is_superuser


class NotFoundAdmin(admin.ModelAdmin):
    """An object outside the user's organization answers 404, like one that does not exist (not a redirect)."""

    def _get_obj_does_not_exist_redirect(self, request, opts, object_id):
        raise Http404(f"No {opts.verbose_name} with id {object_id!r}.")


class CsrfEnforcedAdmin(admin.ModelAdmin):
    """The views that change state (actions, add, change, delete) check CSRF although Label Studio turned it off."""

    def changelist_view(self, request, extra_context=None):
        return csrf_enforced(super().changelist_view)(request, extra_context)

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        return csrf_enforced(super().changeform_view)(request, object_id, form_url, extra_context)

    def delete_view(self, request, object_id, extra_context=None):
        return csrf_enforced(super().delete_view)(request, object_id, extra_context)


@admin.register(OCRModel)
class OCRModelAdmin(NotFoundAdmin, CsrfEnforcedAdmin):
    list_display = ("name", "engine", "kind", "organization", "parent", "cer", "active_projects", "created_at",
                    "created_by")
    list_filter = ("engine", "kind", "created_at")
    search_fields = ("name", "checkpoint", "description")
    raw_id_fields = ("parent", "produced_by_run", "created_by")
    readonly_fields = ("created_at",)

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if sees_everything(request):
            return queryset.annotate(_active=Count("active_in"))
        organization_id = member_organization_id(request.user)
        # Instance-wide models are active in other organizations' projects too: only this one's count.
        mine = Q(active_in__project__organization_id=organization_id)
        return queryset.visible_to(organization_id).annotate(_active=Count("active_in", filter=mine))

    def get_list_filter(self, request):
        return (*self.list_filter, "organization") if sees_everything(request) else self.list_filter

    def get_readonly_fields(self, request, obj=None):
        if sees_everything(request):
            return self.readonly_fields
        return (*self.readonly_fields, "organization", "created_by")

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if not sees_everything(request) and db_field.name == "parent":
            kwargs["queryset"] = OCRModel.objects.for_user(request.user)
        if not sees_everything(request) and db_field.name == "produced_by_run":
            kwargs["queryset"] = FineTuneRun.objects.for_user(request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def has_add_permission(self, request):
        # A staff user outside any organization would otherwise add an instance-wide model.
        if not sees_everything(request) and member_organization_id(request.user) is None:
            return False
        return super().has_add_permission(request)

    def has_change_permission(self, request, obj=None):
        # An instance-wide model serves every organization: only a superuser changes or deletes it.
        if obj is not None and not sees_everything(request) and obj.organization_id is None:
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        if obj is not None and not sees_everything(request) and obj.organization_id is None:
            return False
        return super().has_delete_permission(request, obj)

    @admin.display(description="active in", ordering="_active")
    def active_projects(self, obj):
        return obj._active

    @admin.display(description="CER")
    def cer(self, obj):
        return obj.cer_text

    def save_model(self, request, obj, form, change):
        if not change and obj.created_by_id is None:
            obj.created_by = request.user
        if not change and not sees_everything(request):
            obj.organization_id = member_organization_id(request.user)
        super().save_model(request, obj, form, change)


class StartRunForm(forms.ModelForm):
    """The add form of a run: choosing a project and arguments starts it through runs.start_run."""

    class Meta:
        model = FineTuneRun
        fields = ("project", "base_model", "config")

    def clean_config(self):
        try:
            return TrainingArguments.from_dict(self.cleaned_data.get("config")).to_dict()
        except InvalidTrainingArguments as exc:  # one error per argument, each naming it
            raise forms.ValidationError(list(exc.errors.values())) from exc

    def clean(self):
        cleaned = super().clean()
        project, base_model = cleaned.get("project"), cleaned.get("base_model")
        if project is not None and base_model is not None:
            try:
                runs.check_model_choice(project, base_model)
            except ValueError as exc:
                self.add_error("base_model", f"{exc} for project {project.pk}'s organization")
        if project is not None and not self.errors:
            for problem in preflight.training_problems(project, base_model, cleaned.get("config")):
                self.add_error(None, problem)
        return cleaned


@admin.register(FineTuneRun)
class FineTuneRunAdmin(NotFoundAdmin, CsrfEnforcedAdmin):
    list_display = ("id", "project", "status", "percent", "trigger", "base_model", "result", "started_by",
                    "created_at", "finished_at")
    list_filter = ("status", "trigger", "queue_backend", "created_at")
    search_fields = ("project__title", "error", "job_id", "worker")
    list_select_related = ("project", "base_model", "started_by")
    actions = ("cancel_runs",)
    readonly_fields = ("status", "trigger", "started_by", "dataset", "step", "total_steps", "epoch", "progress",
                       "metrics", "log_tail", "error", "traceback", "retryable", "retry_of", "queue_backend",
                       "job_id", "worker", "heartbeat_at", "cancel_requested", "created_at", "started_at",
                       "finished_at", "result")

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
        queryset = super().get_queryset(request)
        return queryset if sees_everything(request) else queryset.for_user(request.user)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if not sees_everything(request) and db_field.name == "project":
            kwargs["queryset"] = projects_visible_to(request.user)
        if not sees_everything(request) and db_field.name == "base_model":
            kwargs["queryset"] = OCRModel.objects.for_user(request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

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

    def get_formset(self, request, obj=None, **kwargs):
        formset = super().get_formset(request, obj, **kwargs)
        if obj is not None and "active_model" in formset.form.base_fields:
            # Whoever edits, a project chooses among its organization's models and the instance-wide ones.
            formset.form.base_fields["active_model"].queryset = OCRModel.objects.for_project(obj)
        return formset


@admin.register(OCRProject)
class OCRProjectAdmin(NotFoundAdmin, CsrfEnforcedAdmin):
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
        queryset = super().get_queryset(request).select_related("organization", "marker_ls_config__active_model")
        return queryset if sees_everything(request) else queryset.filter(pk__in=projects_visible_to(request.user))

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
        # A new active model goes through activation.activate_model (which also queues its predictions), so
        # the inline saves the other fields and leaves active_model as it was.
        wanted = {}
        for inline in formset.forms:
            if formset.model is ProjectConfig and "active_model" in inline.changed_data:
                wanted[inline] = inline.cleaned_data["active_model"]
                inline.instance.active_model_id = inline.initial.get("active_model")
        super().save_formset(request, form, formset, change)
        for inline, model in wanted.items():
            activation.activate_model(inline.instance.project, model)
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
            try:
                run, created = runs.start_run(project, started_by=request.user, trigger=FineTuneRun.Trigger.ADMIN)
            except runs.RunRefused as exc:
                self.message_user(request, f"{project.title}: no run started: {exc}", messages.ERROR)
                continue
            state = "started" if created else "already active"
            level = messages.SUCCESS if created else messages.WARNING
            self.message_user(request, f"{project.title}: run {run.pk} {state} ({run.status}).", level)
