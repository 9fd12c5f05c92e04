"""Signal receivers: new tasks (saved one by one, or counted after a bulk import), projects that become OCR
projects, new annotations, a process that starts executing jobs itself. Imported once Django's apps are loaded
(``apps.ready``)."""

from __future__ import annotations

from django.db.models.signals import post_save
from django.dispatch import receiver
from projects.models import Project
from tasks.models import Annotation, Task

from marker_ls_plugin.domain.preannotation import on_tasks_created
from marker_ls_plugin.domain.projects import connect_ml_backend
from marker_ls_plugin.domain.queues import embedded_executor_started
from marker_ls_plugin.domain.reaper import start_reaper
from marker_ls_plugin.domain.runs import on_annotation_created
from marker_ls_plugin.wiring.hooks import tasks_added


@receiver(post_save, sender=Task, dispatch_uid="marker_ls_task_created")
def task_created(sender, instance: Task, created: bool, **kwargs) -> None:
    if created:
        on_tasks_created(instance.project, [instance.pk])


@receiver(tasks_added, dispatch_uid="marker_ls_tasks_added")
def tasks_imported(sender, project: Project, task_ids: list[int], **kwargs) -> None:
    """Tasks a bulk import created (``hooks.ProjectMixin``)."""
    on_tasks_created(project, task_ids)


@receiver(post_save, sender=Project, dispatch_uid="marker_ls_project_saved")
def project_saved(sender, instance: Project, created: bool, **kwargs) -> None:
    """OCR-shaped projects get the in-process "Marker OCR" backend in their Model tab."""
    update_fields = kwargs.get("update_fields")
    if not created and update_fields is not None and "label_config" not in update_fields:
        return  # counters and the like: Label Studio saves projects often, the config rarely
    connect_ml_backend(instance)


@receiver(post_save, sender=Annotation, dispatch_uid="marker_ls_annotation_created")
def annotation_created(sender, instance: Annotation, created: bool, **kwargs) -> None:
    """A submitted (not skipped) annotation counts towards the project's retrain threshold."""
    if created and not instance.was_cancelled and instance.project_id:
        on_annotation_created(instance.project_id)


@receiver(embedded_executor_started, dispatch_uid="marker_ls_embedded_reaper")
def embedded_executor(sender, name: str, **kwargs) -> None:
    """Without workers, the process that executes runs also fails the dead ones (domain/reaper.py)."""
    start_reaper()
