"""Where an export reads annotated tasks from: Label Studio's database in-process (here) or its API (remote.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any, Protocol

from marker_ls_plugin import __version__
from marker_ls_plugin.conf import get_config
from marker_ls_plugin.dataset.regions import choose_annotation
from marker_ls_plugin.dataset.storage import read_task_image_bytes
from marker_ls_plugin.ocr.images import open_image

CHUNK = 100  # tasks read, and their annotations fetched, at a time


@dataclass(frozen=True)
class AnnotatedTask:
    """A task with the annotation its rule chose, and how to read the image its data names."""

    task: int
    data: dict[str, Any]
    annotation: int
    result: Any
    # The image URL as stored in ``data`` -> the upright RGB image; raises ImageError.
    load_image: Callable[[str], Any]


class Source(Protocol):
    """A project's label config and its annotated tasks, streamed in task id order."""

    project: int
    label_config: str

    def tasks(self, rule: str) -> Iterator[AnnotatedTask]: ...

    def total_tasks(self) -> int: ...

    def versions(self) -> dict[str, str | None]: ...

    def close(self) -> None: ...


class DatabaseSource:
    """Tasks read with Label Studio's ORM; needs Django set up with its settings."""

    def __init__(self, project_id: int, max_pixels: int | None = None):
        # Deferred: Label Studio's models need Django's apps; the API export imports this module without them.
        from projects.models import Project

        self._project = Project.objects.filter(pk=project_id).first()
        if self._project is None:
            raise ValueError(f"no project with id {project_id}")
        self.project = self._project.pk
        self.label_config = self._project.label_config
        self.max_pixels = max_pixels or get_config()["MAX_IMAGE_PIXELS"]

    def tasks(self, rule: str) -> Iterator[AnnotatedTask]:
        from django.db.models import Exists, OuterRef  # deferred: needs Django's apps, as above
        from tasks.models import Annotation, Task  # deferred: needs Django's apps, as above

        kept = Annotation.objects.filter(was_cancelled=False)
        tasks = (Task.objects.filter(project=self._project)
                 .filter(Exists(kept.filter(task=OuterRef("pk"))))
                 .only("id", "data", "project_id")
                 .order_by("id")
                 .iterator(chunk_size=CHUNK))
        while chunk := list(islice(tasks, CHUNK)):
            # Plain dicts, not prefetched rows: those point back at their task, and such cycles would wait for
            # the garbage collector, so memory would grow with the project.
            annotations: dict[int, list[dict[str, Any]]] = {}
            for row in kept.filter(task_id__in=[task.pk for task in chunk]).values(
                    "id", "task_id", "result", "ground_truth", "updated_at"):
                annotations.setdefault(row["task_id"], []).append(row)
            for task in chunk:
                task.project = self._project  # storage look-ups need it; one row for all tasks
                chosen = choose_annotation(annotations.get(task.pk, []), rule)
                if chosen is not None:
                    yield AnnotatedTask(task.pk, task.data or {}, chosen["id"], chosen["result"],
                                        _ImageLoader(task, self.max_pixels))

    def total_tasks(self) -> int:
        return self._project.tasks.count()

    def versions(self) -> dict[str, str | None]:
        import label_studio  # deferred: Label Studio's package, only in-process

        return {"label_studio": label_studio.__version__, "marker_ls_plugin": __version__}

    def close(self) -> None:
        pass


class _ImageLoader:
    def __init__(self, task: Any, max_pixels: int):
        self.task, self.max_pixels = task, max_pixels

    def __call__(self, url: str) -> Any:
        return open_image(read_task_image_bytes(self.task, url), max_pixels=self.max_pixels)
