"""Run in a fresh process: one pre-annotation batch, and the memory it took.

``python mls_preannotate_rss.py PROJECT_ID TASK_ID...`` (the test's database and data directory in the
environment) prints one JSON object (kB): ``engine_peak`` (what the loaded engine's peak grew by reading one page
of the size it works at), ``baseline`` (RSS before the batch), ``peak`` (VmHWM during it), ``after`` (RSS after
it) and ``summary`` (what preannotate_tasks returned).
"""

from __future__ import annotations

import json
import sys

from mls_helpers import status_kb


def main(project_id: int, task_ids: list[int]) -> dict:
    import django

    django.setup()
    from mls_render import render_page
    from projects.models import Project

    from marker_ls_plugin.domain.engines import get_engine
    from marker_ls_plugin.domain.predictions import preannotate_tasks
    from marker_ls_plugin.domain.projects import model_choice

    choice = model_choice(Project.objects.get(pk=project_id))
    engine = get_engine(choice.engine, **choice.options)
    side = engine.max_page_side or 2000
    page, _ = render_page(["Warm up the engine first"], (side, side), 30)
    engine.recognize_pages([page.resize((300, 300))])  # the first call's one-off set-up
    reset_peak()
    before = status_kb("VmRSS")
    engine.recognize_pages([page])  # what reading one page at the engine's full size takes
    engine_peak = status_kb("VmHWM") - before
    del engine, page
    reset_peak()
    baseline = status_kb("VmRSS")
    summary = preannotate_tasks(project_id, task_ids, force=True)
    return {"baseline": baseline, "engine_peak": engine_peak, "peak": status_kb("VmHWM"),
            "after": status_kb("VmRSS"), "summary": summary}


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as clear:  # "5": VmHWM restarts from the RSS of now
        clear.write("5")


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]), [int(arg) for arg in sys.argv[2:]])))
