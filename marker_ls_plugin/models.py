"""The OCR model registry, per-project plugin state, and fine-tune runs."""

from __future__ import annotations

import math
import secrets
from typing import Any

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from organizations.models import OrganizationMember
from projects.models import Project

HEADLINE_KEYS = ("cer", "wer", "exact", "lines")


def member_organization_id(user) -> int | None:
    """The user's active organization while they are still a member of it; None otherwise."""
    organization_id = getattr(user, "active_organization_id", None)
    if not getattr(user, "is_authenticated", False) or organization_id is None:
        return None
    member = OrganizationMember.objects.filter(user=user, organization_id=organization_id, deleted_at__isnull=True)
    return organization_id if member.exists() else None


def projects_visible_to(user) -> models.QuerySet:
    """The projects ``user`` may see: those of the active organization, while still a member of it.

    Label Studio Community's ``Project.has_permission`` lets any user through as long as they were not
    removed from the project's organization; the plugin asks for the same organization and a membership.
    """
    organization_id = member_organization_id(user)
    if organization_id is None:
        return Project.objects.none()
    return Project.objects.filter(organization_id=organization_id)


def _organization_id(organization) -> int | None:
    return getattr(organization, "pk", organization)


class OCRModelQuerySet(models.QuerySet):
    """Every listing and every choice of models starts here: an organization's own plus the instance-wide ones."""

    def visible_to(self, organization) -> OCRModelQuerySet:
        """Models of ``organization`` (an Organization or its id) and instance-wide ones (organization null)."""
        organization_id = _organization_id(organization)
        instance_wide = Q(organization__isnull=True)
        if organization_id is None:
            return self.filter(instance_wide)
        return self.filter(instance_wide | Q(organization_id=organization_id))

    def for_project(self, project) -> OCRModelQuerySet:
        """The models ``project`` may use: its organization's and the instance-wide ones."""
        return self.visible_to(project.organization_id)

    def for_user(self, user) -> OCRModelQuerySet:
        """The models ``user`` may see: those of the organization they work in, and the instance-wide ones."""
        return self.visible_to(member_organization_id(user))


class OCRModel(models.Model):
    """A recognition model that can pre-annotate: a base checkpoint or a fine-tuned one."""

    class Engine(models.TextChoices):
        SURYA = "surya", "Surya"
        RAPIDOCR = "rapidocr", "RapidOCR"

    class Kind(models.TextChoices):
        BASE = "base", "Base"
        FINETUNED = "finetuned", "Fine-tuned"

    name = models.SlugField(max_length=100, unique=True, help_text="Also the predictions' model_version.")
    engine = models.CharField(max_length=20, choices=Engine.choices, default=Engine.SURYA)
    checkpoint = models.CharField(
        max_length=1000, blank=True, help_text="Hub id, surya s3:// id or local directory; blank: engine default."
    )
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.BASE)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    produced_by_run = models.OneToOneField(
        "FineTuneRun",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="result_model",
        help_text="The fine-tune run that produced this model.",
    )
    metrics = models.JSONField(default=dict, blank=True)
    dataset_sha256 = models.CharField(
        max_length=64, blank=True, help_text="Content hash of the dataset a fine-tuned model was trained on."
    )
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    organization = models.ForeignKey(
        "organizations.Organization", null=True, blank=True, on_delete=models.CASCADE,
        related_name="marker_ls_models",
        help_text="The organization whose project produced it; empty: instance-wide (every organization sees it).",
    )

    objects = OCRModelQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "OCR model"

    def __str__(self) -> str:
        return self.name

    @property
    def headline_metrics(self) -> dict[str, float]:
        """CER, WER, exact-line rate and line count on validation: a run's "after", else flat keys."""
        metrics = self.metrics if isinstance(self.metrics, dict) else {}
        after = metrics.get("after")
        source = after if isinstance(after, dict) else metrics
        return {key: source[key] for key in HEADLINE_KEYS if _is_number(source.get(key))}

    @property
    def cer_text(self) -> str:
        """The headline CER as a percentage, "-" when there is none."""
        cer = self.headline_metrics.get("cer")
        return "-" if cer is None else f"{cer:.2%}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def new_ml_token() -> str:
    return secrets.token_urlsafe(24)


class ProjectConfig(models.Model):
    """The plugin's state for one Label Studio project; holds its single active model."""

    project = models.OneToOneField(
        "projects.Project", primary_key=True, on_delete=models.CASCADE, related_name="marker_ls_config"
    )
    active_model = models.ForeignKey(
        OCRModel,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="active_in",
        help_text="The model that pre-annotates this project.",
    )
    preannotate = models.BooleanField(default=True, help_text="Pre-annotate imported tasks with OCR.")
    retrain_every = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)],
        help_text="Start a fine-tune run every N new annotations; empty: never.",
    )
    engine = models.CharField(
        max_length=20, blank=True, choices=OCRModel.Engine.choices,
        help_text="Engine when no model is active; blank: MARKER_LS['ENGINE'].",
    )
    engine_error = models.TextField(blank=True, help_text="Why the engine could not load, when it could not.")
    ml_token = models.CharField(
        max_length=64, default=new_ml_token,
        help_text="Password of this project's HTTP ML backend credential (user project-<id>).",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "project OCR configuration"

    def __str__(self) -> str:
        return f"project {self.project_id}"


class TaskOCR(models.Model):
    """Pre-annotation state of one task: which model version predicted it, or why it could not."""

    class Status(models.TextChoices):
        DONE = "done", "Pre-annotated"
        ERROR = "error", "Error"

    task = models.OneToOneField("tasks.Task", primary_key=True, on_delete=models.CASCADE, related_name="marker_ls_ocr")
    model_version = models.CharField(max_length=200)
    status = models.CharField(max_length=10, choices=Status.choices)
    error = models.TextField(blank=True)
    lines = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "task OCR status"
        verbose_name_plural = "task OCR statuses"

    def __str__(self) -> str:
        return f"task {self.task_id}: {self.status}"


class FineTuneRunQuerySet(models.QuerySet):
    def visible_to(self, organization) -> FineTuneRunQuerySet:
        """Runs of ``organization``'s projects."""
        return self.filter(project__organization_id=_organization_id(organization))

    def for_user(self, user) -> FineTuneRunQuerySet:
        """Runs of the projects ``user`` may see."""
        return self.filter(project__in=projects_visible_to(user))


class FineTuneRun(models.Model):
    """One fine-tuning job for a project, from the request to its resulting model."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    ACTIVE_STATUSES = (Status.QUEUED, Status.RUNNING)
    FINAL_STATUSES = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    class Trigger(models.TextChoices):
        ADMIN = "admin", "Admin action"
        BUTTON = "button", "Retrain button"
        API = "api", "API"
        AUTO = "auto", "Automatic threshold"
        LABEL_STUDIO = "label_studio", "Label Studio's Start Training"

    project = models.ForeignKey("projects.Project", on_delete=models.CASCADE, related_name="marker_ls_runs")
    base_model = models.ForeignKey(
        OCRModel, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs_based_on"
    )
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    trigger = models.CharField(max_length=20, choices=Trigger.choices, default=Trigger.API)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED, db_index=True)
    config = models.JSONField(default=dict, blank=True, help_text="Training arguments (TrainingArguments).")
    dataset = models.JSONField(default=dict, blank=True, help_text="Summary of the dataset snapshot.")
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(null=True, blank=True)
    epoch = models.FloatField(default=0)
    progress = models.FloatField(default=0, help_text="Fraction done, 0 to 1.")
    metrics = models.JSONField(default=list, blank=True, help_text="Metric history: a list of dicts.")
    log_tail = models.TextField(blank=True)
    error = models.TextField(blank=True, help_text="Why it failed, in one line.")
    traceback = models.TextField(blank=True, help_text="The failure's full traceback, when an exception ended it.")
    retryable = models.BooleanField(
        default=False,
        help_text="A retry may succeed: it failed for a reason outside the run (worker lost, job timeout).",
    )
    retry_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retries",
        help_text="The failed or cancelled run this one retries.",
    )
    queue_backend = models.CharField(max_length=20, blank=True)
    job_id = models.CharField(max_length=100, blank=True)
    worker = models.CharField(max_length=200, blank=True, help_text="Host and pid executing the run.")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = FineTuneRunQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "fine-tune run"
        constraints = [
            # The database itself keeps two concurrent starts from creating two active runs.
            models.UniqueConstraint(
                fields=["project"],
                condition=Q(status__in=["queued", "running"]),
                name="marker_ls_one_active_run_per_project",
            )
        ]

    def __str__(self) -> str:
        return f"run {self.pk} ({self.status}) for project {self.project_id}"

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE_STATUSES

    @property
    def can_retry(self) -> bool:
        """Cancelled runs, and runs that failed for a reason a new run may not meet, can be started again."""
        return self.status == self.Status.CANCELLED or (self.status == self.Status.FAILED and self.retryable)

    @property
    def latest_metrics(self) -> dict:
        return self.metrics[-1] if self.metrics else {}


class OCRProject(Project):
    """Label Studio's projects as the plugin's admin lists them (a proxy: no table of its own)."""

    class Meta:
        proxy = True
        verbose_name = "OCR project"
