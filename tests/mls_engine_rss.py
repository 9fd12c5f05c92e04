"""Run in a fresh process: activate surya models one after another as a worker would, and print RSS after each.

``python mls_engine_rss.py CACHE_SIZE DETECTION RECOGNITION...`` prints one JSON object: ``baseline`` (kB, surya
imported, no model), ``after`` (kB after each model loaded and read a page) and ``peak`` (the process's VmHWM).
Django is configured with the plugin's defaults and ``ENGINE_CACHE_SIZE`` only: no database is needed.
"""

from __future__ import annotations

import json
import os
import sys

from mls_helpers import status_kb


def main(cache_size: int, detection: str, recognitions: list[str]) -> dict:
    os.environ.setdefault("TORCH_DEVICE", "cpu")
    os.environ.setdefault("DISABLE_TQDM", "true")
    from django.conf import settings

    settings.configure(MARKER_LS={"ENGINE_CACHE_SIZE": cache_size})
    import surya.detection  # noqa: F401  what every model shares is in the baseline
    import surya.recognition  # noqa: F401
    import torch
    from mls_render import render_page

    from marker_ls_plugin.domain.engines import get_engine
    from marker_ls_plugin.ocr.pool import loaded_engines

    torch.set_num_threads(1)  # the same arithmetic, whatever the machine
    page, _ = render_page(["Memory stays flat"], (400, 120), 28)
    baseline = status_kb("VmRSS")
    after, held = [], []
    for recognition in recognitions:
        engine = get_engine("surya", recognition_checkpoint=recognition, detection_checkpoint=detection,
                            device="cpu", max_tokens=4)
        engine.recognize_pages([page])
        del engine
        after.append(status_kb("VmRSS"))
        held.append(sum(engine.loaded for engine in loaded_engines()))
    return {"baseline": baseline, "after": after, "peak": status_kb("VmHWM"), "held": held}


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]), sys.argv[2], sys.argv[3:])))
