"""Where the plugin hears of new tasks, whatever the import path.

File and JSON imports use ``Task.objects.bulk_create`` (no ``post_save``) but then always call the
project's ``update_tasks_counters_and_task_states``; Label Studio loads the project mixin that holds
it from ``settings.PROJECT_MIXIN``, which the plugin's settings point here. Storage sync and
``POST /api/tasks`` save tasks one by one and send ``post_save`` (``signals.py``).
"""

from __future__ import annotations

import inspect

from projects.functions.utils import get_unique_ids_list
from projects.mixins import ProjectMixin as LabelStudioProjectMixin

_UPDATE_COUNTERS = inspect.signature(LabelStudioProjectMixin.update_tasks_counters_and_task_states)


class ProjectMixin(LabelStudioProjectMixin):
    """Label Studio's project mixin, plus a call to pre-annotation when tasks were added."""

    def update_tasks_counters_and_task_states(self, *args, **kwargs):
        # Label Studio's method gets its arguments exactly as given; the plugin only reads them.
        result = super().update_tasks_counters_and_task_states(*args, **kwargs)
        arguments = _UPDATE_COUNTERS.bind(self, *args, **kwargs).arguments
        if arguments.get("tasks_number_changed"):
            # Deferred: Label Studio loads PROJECT_MIXIN while its own models import.
            from marker_ls_plugin.domain.preannotation import on_tasks_created

            on_tasks_created(self, get_unique_ids_list(arguments["tasks_queryset"]))
        return result
