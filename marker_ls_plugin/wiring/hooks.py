"""Where the plugin hears of new tasks, whatever the import path.

File and JSON imports use ``Task.objects.bulk_create`` (no ``post_save``) but then always call the
project's ``update_tasks_counters_and_task_states``; Label Studio loads the project mixin that holds
it from ``settings.PROJECT_MIXIN``, which the plugin's settings point here. Storage sync and
``POST /api/tasks`` save tasks one by one and send ``post_save`` (``signals.py``).

Label Studio loads this module while its own models import, before the plugin's domain can be imported: the
mixin sends ``tasks_added`` and ``signals.py`` connects pre-annotation to it once the apps are loaded.
"""

from __future__ import annotations

import inspect

from django.dispatch import Signal
from projects.functions.utils import get_unique_ids_list
from projects.mixins import ProjectMixin as LabelStudioProjectMixin

_UPDATE_COUNTERS = inspect.signature(LabelStudioProjectMixin.update_tasks_counters_and_task_states)

tasks_added = Signal()  # sent with ``project`` and ``task_ids`` after Label Studio counted new tasks of a project


class ProjectMixin(LabelStudioProjectMixin):
    """Label Studio's project mixin, plus a call to pre-annotation when tasks were added."""

    def update_tasks_counters_and_task_states(self, *args, **kwargs):
        # Label Studio's method gets its arguments exactly as given; the plugin only reads them.
        result = super().update_tasks_counters_and_task_states(*args, **kwargs)
        arguments = _UPDATE_COUNTERS.bind(self, *args, **kwargs).arguments
        if arguments.get("tasks_number_changed"):
            tasks_added.send(sender=type(self), project=self,
                             task_ids=get_unique_ids_list(arguments["tasks_queryset"]))
        return result
