"""Signal receivers: new tasks saved one by one, projects that become OCR projects, new annotations."""

from __future__ import annotations

from django.db.models.signals import post_save
from django.dispatch import receiver
from projects.models import Project
from tasks.models import Annotation, Task


@receiver(post_save, sender=Task, dispatch_uid="marker_ls_task_created")
def task_created(sender, instance: Task, created: bool, **kwargs) -> None:
    if created:
        from marker_ls_plugin.domain.preannotation import on_tasks_created

        on_tasks_created(instance.project, [instance.pk])


@receiver(post_save, sender=Project, dispatch_uid="marker_ls_project_saved")
def project_saved(sender, instance: Project, created: bool, **kwargs) -> None:
    """OCR-shaped projects get the in-process "Marker OCR" backend in their Model tab."""
    update_fields = kwargs.get("update_fields")
    if not created and update_fields is not None and "label_config" not in update_fields:
        return  # counters and the like: Label Studio saves projects often, the config rarely
    from marker_ls_plugin.domain.preannotation import connect_ml_backend

    connect_ml_backend(instance)


@receiver(post_save, sender=Annotation, dispatch_uid="marker_ls_annotation_created")
def annotation_created(sender, instance: Annotation, created: bool, **kwargs) -> None:
    """A submitted (not skipped) annotation counts towards the project's retrain threshold."""
    if created and not instance.was_cancelled and instance.project_id:
        from marker_ls_plugin.domain.runs import on_annotation_created

        on_annotation_created(instance.project_id)
