"""Where the plugin hears of new tasks, whatever the import path.

File and JSON imports use ``Task.objects.bulk_create`` (no ``post_save``) but then always call the
project's ``update_tasks_counters_and_task_states``; Label Studio loads the project mixin that holds
it from ``settings.PROJECT_MIXIN``, which the plugin's settings point here. Storage sync and
``POST /api/tasks`` save tasks one by one and send ``post_save`` (``signals.py``).
"""

from __future__ import annotations

from projects.functions.utils import get_unique_ids_list
from projects.mixins import ProjectMixin as LabelStudioProjectMixin


class ProjectMixin(LabelStudioProjectMixin):
    """Label Studio's project mixin, plus a call to pre-annotation when tasks were added."""

    def update_tasks_counters_and_task_states(self, tasks_queryset, maximum_annotations_changed,
                                              overlap_cohort_percentage_changed, tasks_number_changed,
                                              *args, **kwargs):
        result = super().update_tasks_counters_and_task_states(
            tasks_queryset, maximum_annotations_changed, overlap_cohort_percentage_changed, tasks_number_changed,
            *args, **kwargs)
        if tasks_number_changed:
            from marker_ls_plugin.preannotation import on_tasks_created

            on_tasks_created(self, get_unique_ids_list(tasks_queryset))
        return result
