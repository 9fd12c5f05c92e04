"""A new user's first hour, in a real browser, against `marker-ls start` as the README's first command runs it.

One server for the module: the demo on, SQLite, no Redis, offline and without surya's weights (MODEL_CACHE_DIR
empty, HF_HUB_OFFLINE=1), MARKER_LS_ENGINE unset (so "auto" must choose RapidOCR) and the real fine-tune as the
run function. A tiny random surya recognition checkpoint is placed in the models directory before the start (the
scan at start registers it), as the fix text tells a user to do, so that Start Training can be shown succeeding;
without surya's detector it cannot pre-annotate. MARKER_LS_MIN_VAL_LINES=1: two annotated pages hold about four
validation lines, one short of the default. Every step saves screenshots under <DATA>/artifacts/first-hour/.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from mls_chromium import PluginErrors, _browser_available, browser, login  # noqa: F401  (fixtures)
from mls_helpers import TESTS, LabelStudio, clean_environ, start_marker_ls, stop_process, wait_for
from mls_render import render_page

from marker_ls_plugin.ocr.labeling import OCR_PRESET_CONFIG

# conftest's session directory: this process's LABEL_STUDIO_BASE_DATA_DIR is <DATA>/main.
DATA = Path(os.environ["LABEL_STUDIO_BASE_DATA_DIR"]).parent
# Kept after the session (CI collects them): MARKER_LS_TEST_ARTIFACTS, or test-artifacts/ in the checkout.
ARTIFACTS = Path(os.environ.get("MARKER_LS_TEST_ARTIFACTS") or TESTS.parent / "test-artifacts") / "first-hour"
DEMO_TITLE = "Marker OCR demo"
PRESET = "Marker OCR: text lines with transcriptions"
TINY_MODEL = "tiny-surya-recognition"
PAGES = [
    ["Harbour ledger 1887", "Cargo: salt cod, 40 barrels", "Landed at the north slip", "Paid in full on delivery",
     "Weather fair, wind from the west", "Crew of six, all accounted for", "Next sailing on the ninth",
     "Salt bought at the quay store", "Nets mended by the cooper", "Two barrels spoiled by rain",
     "Harbour dues settled in coin", "Ice from the mill at dawn", "Pilot taken on past the bar",
     "Oil for the lamps, one cask", "Letters sent with the mail boat", "Rope and tar from the chandler",
     "Repairs to the main hatch", "Fresh water for the return", "The skipper signs below", "End of the first page"],
    ["Second page of the ledger", "Receipts for the week", "Widgets, blue, twelve of them",
     "Shipping to the north coast", "Total due on the first", "Invoice sent by the clerk", "Harbour master informed",
     "Cod sold at the market", "Herring kept for the winter", "Barrels returned to the yard",
     "Boat painted before the storm", "Anchor chain replaced", "Sails stored in the loft", "Lanterns trimmed at dusk",
     "Tide tables copied by hand", "Bread and cheese for the crew", "Ledger checked by the owner",
     "Nothing further to report", "Signed and witnessed", "End of the second page"],
]
PAGE_SIZE, FONT_SIZE = (1000, 920), 22
TARGET = (0, 2)  # page, line: step 3 deletes this line's predicted box and draws it again


# --- the server, its API, the browser --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server():
    """`marker-ls start` with the demo, as a new user runs it; stopped by its pid, also when a step fails."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    print(f"\nfirst-hour screenshots: {ARTIFACTS}")
    data_dir = DATA / "first-hour"
    _build_tiny_recognition(data_dir / "marker_ls" / "models" / "recognition" / TINY_MODEL)
    env = clean_environ()
    for name in ("MARKER_LS_ENGINE", "MARKER_LS_RUN_FUNCTION"):  # the defaults: "auto", the real fine-tune
        env.pop(name, None)
    env.update({
        "LABEL_STUDIO_USERNAME": LabelStudio.email, "LABEL_STUDIO_PASSWORD": LabelStudio.password,
        "MODEL_CACHE_DIR": tempfile.mkdtemp(prefix="surya-cache-", dir=DATA), "HF_HUB_OFFLINE": "1",
        "MARKER_LS_MIN_VAL_LINES": "1",
    })
    instance = start_marker_ls(env, data_dir, DATA / "first-hour-server.log")
    try:
        yield instance
    finally:
        stop_process(instance.proc)
        print(f"first-hour server log: {instance.log_path}")


def _build_tiny_recognition(directory: Path) -> None:
    """In a child process: torch and surya stay out of the test process."""
    code = "import sys, pathlib, surya_tiny; surya_tiny.build_tiny_recognition(pathlib.Path(sys.argv[1]))"
    result = subprocess.run([sys.executable, "-c", code, str(directory)], cwd=TESTS, env=clean_environ(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def http(server):
    return server.session()


def api(server, http, method: str, path: str, **kwargs):
    response = http.request(method, f"{server.url}{path}", timeout=60, **kwargs)
    assert response.ok, f"{method} {path}: {response.status_code} {response.text[:2000]}"
    return response.json() if response.content else None


def project_id(server, http, title: str) -> int:
    projects = api(server, http, "GET", "/api/projects/", params={"page_size": 100})["results"]
    [found] = [p["id"] for p in projects if p["title"] == title]
    return found


def tasks_of(server, http, project: int) -> list[dict]:
    tasks = api(server, http, "GET", "/api/tasks", params={"project": project, "page_size": 100})["tasks"]
    return [api(server, http, "GET", f"/api/tasks/{task['id']}/") for task in tasks]


def runs_of(server, http, project: int) -> list[dict]:
    return api(server, http, "GET", f"/marker-ls/api/projects/{project}/runs/")


def new_ocr_project(server, http, title: str) -> int:
    project = api(server, http, "POST", "/api/projects/", json={"title": title, "label_config": OCR_PRESET_CONFIG})
    return project["id"]


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def log_lines(server, pattern: str) -> str:
    """The server log's lines matching ``pattern``, for assertion messages."""
    return "\n".join(line for line in server.log_path.read_text().splitlines() if re.search(pattern, line))[-4000:]


@pytest.fixture
def page(browser, server):  # noqa: F811
    """A fresh context logged in through Label Studio's login form; /data/ responses are kept on ``page.data``."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.plugin_errors = PluginErrors(page)
        page.data = []
        page.on("response", lambda response: page.data.append(response) if "/data/" in response.url else None)
        login(page, server)
        yield page
    finally:
        context.close()


def loaded_images(page, selector: str) -> list[tuple[str, int]]:
    return page.locator(selector).evaluate_all("images => images.map(i => [i.src, i.complete ? i.naturalWidth : -1])")


# --- step 2's project: made through Label Studio's Create Project dialog -----------------------------------------


@pytest.fixture(scope="module")
def first_project(browser, server):  # noqa: F811
    """Create Project > the preset (Labeling Setup) > two page images (Data Import) > Save; its id and pages."""
    pages = []
    for number, lines in enumerate(PAGES, start=1):
        image, polygons = render_page(lines, size=PAGE_SIZE, font_size=FONT_SIZE)
        path = ARTIFACTS / f"first-hour-page-{number}.png"
        image.save(path)
        pages.append((path, polygons))
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        page = context.new_page()
        page.set_default_timeout(30_000)
        login(page, server)
        page.goto(f"{server.url}/projects/")
        # The dialog saves a draft project at once; editing before it exists fails in Label Studio's own code.
        with page.expect_response(lambda r: r.request.method == "POST" and re.search(r"/api/projects/?$", r.url)) \
                as created:
            page.get_by_role("button", name="Create").click()
        pk = created.value.json()["id"]
        page.fill("input.project-title", "First hour")
        page.locator(".lsf-toggle-items__item", has_text="Labeling Setup").click()
        page.locator("li.lsf-templates-list__group", has_text="Computer Vision").click()
        page.locator("li.lsf-templates-list__template", has_text=PRESET).click()
        page.get_by_text("Labeling Interface").wait_for()
        shot(page, "2-1-labeling-setup-preset")
        page.locator(".lsf-toggle-items__item", has_text="Data Import").click()
        with page.expect_response(lambda r: re.search(rf"/api/projects/{pk}/import", r.url) is not None) as upload:
            page.set_input_files("#file-input", [str(path) for path, _ in pages])
        assert upload.value.status == 201, upload.value.text()
        shot(page, "2-2-data-import")
        page.get_by_role("button", name="Save").click()
        page.wait_for_url(f"**/projects/{pk}/data**")
        shot(page, "2-3-saved")
    finally:
        context.close()
    return {"id": pk, "pages": pages}


# --- the steps ---------------------------------------------------------------------------------------------------


def test_1_demo_project_images_load(page, server, http):
    demo = project_id(server, http, DEMO_TITLE)
    tasks = tasks_of(server, http, demo)
    assert len(tasks) == 3
    page.goto(f"{server.url}/projects/{demo}/data")
    page.locator(".lsf-table-row").nth(len(tasks) - 1).wait_for()
    thumbnails = ".lsf-table-row img"
    wait_for(lambda: all(width != -1 for _, width in loaded_images(page, thumbnails)), 30,
             message="the Data Manager's thumbnails to finish loading")
    shot(page, "1-1-demo-data-manager")
    uploads = [(r.status, r.url) for r in page.data if "/data/upload/" in r.url]
    assert uploads and all(status == 200 for status, _ in uploads), \
        f"{uploads}\nserver log:\n{log_lines(server, '/data/upload/|Error|Traceback')}"
    thumbnails_seen = loaded_images(page, thumbnails)
    assert len(thumbnails_seen) == len(tasks) and all(width > 0 for _, width in thumbnails_seen), thumbnails_seen

    page.goto(f"{server.url}/projects/{demo}/data?task={tasks[0]['id']}")
    page.locator(".lsf-image img").wait_for(state="attached")
    wait_for(lambda: loaded_images(page, ".lsf-image img")[0][1] != -1, 30, message="the editor's image")
    shot(page, "1-2-demo-editor")
    editor = [(r.status, r.url) for r in page.data if tasks[0]["data"]["image"] in r.url]
    assert editor and all(status == 200 for status, _ in editor), editor
    assert loaded_images(page, ".lsf-image img")[0][1] > 0
    assert not page.plugin_errors.errors


def test_2_preset_project_is_preannotated_with_rapidocr(first_project, page, server, http):
    pk = first_project["id"]
    project = api(server, http, "GET", f"/api/projects/{pk}/")
    assert project["title"] == "First hour" and project["task_number"] == len(PAGES)
    assert api(server, http, "GET", f"/marker-ls/api/projects/{pk}/ocr/")["ocr_project"]

    def predicted():
        return api(server, http, "GET", f"/api/projects/{pk}/")["total_predictions_number"] >= len(PAGES)

    try:
        wait_for(predicted, 180, interval=1, message="a prediction for each imported page")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nOCR state: {api(server, http, 'GET', f'/marker-ls/api/projects/{pk}/ocr/')}"
                             f"\nserver log:\n{log_lines(server, 'engine|preannot|ERROR')}") from None
    tasks = tasks_of(server, http, pk)
    assert len(tasks) == len(PAGES)
    for task in tasks:
        [prediction] = task["predictions"]
        assert prediction["model_version"] == "marker-rapidocr-base"
        texts = [item["value"]["text"][0] for item in prediction["result"] if item["type"] == "textarea"]
        assert len(texts) >= len(PAGES[0]) - 2, texts
    # No click asked for them: the Data Manager, opened now, counts them.
    page.goto(f"{server.url}/projects/{pk}/data")
    page.get_by_text(f"Predictions: {len(PAGES)}", exact=True).wait_for()
    shot(page, "2-4-predictions-in-data-manager")

    page.goto(f"{server.url}/marker-ls/projects/{pk}/")
    engine = page.locator(".app-wrapper .mls-page [data-field=engine]")
    engine.wait_for()
    shot(page, "2-5-project-page-engine")
    assert engine.inner_text().strip() == "rapidocr"
    assert page.locator("[data-field=model-version]").inner_text().strip() == "marker-rapidocr-base"
    assert not page.plugin_errors.errors


def test_3_auto_annotation_reads_a_drawn_box(first_project, page, server, http):
    pk = first_project["id"]
    page_index, line_index = TARGET
    wanted = PAGES[page_index][line_index]
    wait_for(lambda: all(t["predictions"] for t in tasks_of(server, http, pk)), 180, interval=1,
             message="the pages' predictions")
    [task] = [t for t in tasks_of(server, http, pk) if t["data"]["image"].endswith(f"page-{page_index + 1}.png")]
    page.goto(f"{server.url}/projects/{pk}/data?task={task['id']}")
    image = page.locator(".lsf-image img")
    image.wait_for(state="attached")
    wait_for(lambda: loaded_images(page, ".lsf-image img")[0][1] > 0, 30, message="the editor's image")
    inputs = page.get_by_test_id("textarea-region-input")
    holder = page.locator(".lsf-outliner .lsf-tree-list-holder")

    def texts(scroll_to: str = "0") -> list[str]:
        """The transcriptions the region list shows, scrolled to the top ("0") or bottom: it is a virtual list."""
        holder.evaluate(f"holder => holder.scrollTop = {scroll_to}")
        return [" ".join(i.input_value().split()) for i in inputs.all()]

    wait_for(lambda: wanted in texts(), 30, message=f"the predicted region of {wanted!r} in the region list")
    shot(page, "3-1-editor-with-predictions")
    # Delete the line's predicted region: select it in the region list, then Backspace.
    item = page.locator("div.lsf-outliner-item").nth(texts().index(wanted))
    item.locator(".lsf-outliner-item__title").click()
    page.keyboard.press("Backspace")
    wait_for(lambda: wanted not in texts(), 10, message=f"the region of {wanted!r} to be deleted")
    shot(page, "3-2-region-deleted")

    bar = page.locator(".lsf-bottombar")
    for testid, label in (("bottombar-auto-annotation-toggle", "Auto-Annotation"),
                          ("bottombar-auto-accept-toggle", "Auto-Accept Suggestions")):
        if not page.get_by_test_id(testid).is_checked():
            bar.get_by_text(label, exact=True).click()
        assert page.get_by_test_id(testid).is_checked(), label
    page.locator("button.lsf-tool_smart").first.click()  # the smart (interactive) rectangle tool
    page.locator(".lsf-labels .lsf-label").filter(has_text=re.compile(r"^Text")).first.click()
    box = image.bounding_box()
    natural_width = image.evaluate("i => i.naturalWidth")
    scale = box["width"] / natural_width
    xs = [x for x, _ in first_project["pages"][page_index][1][line_index]]
    ys = [y for _, y in first_project["pages"][page_index][1][line_index]]
    start = (box["x"] + min(xs) * scale, box["y"] + min(ys) * scale)
    end = (box["x"] + max(xs) * scale, box["y"] + max(ys) * scale)
    with page.expect_response(lambda r: re.search(r"/api/ml/\d+/interactive-annotating", r.url) is not None,
                              timeout=120_000) as answer:
        page.mouse.move(*start)
        page.mouse.down()
        page.mouse.move((start[0] + end[0]) / 2, (start[1] + end[1]) / 2, steps=5)
        page.mouse.move(*end, steps=5)
        page.mouse.up()
    assert answer.value.status == 200, answer.value.text()
    result = answer.value.json()["data"]["result"]
    read = [" ".join(item["value"]["text"][0].split()) for item in result if item["type"] == "textarea"]
    assert read == [wanted], (read, answer.value.text()[:2000])
    # The new region is the list's last (ordered by time).
    wait_for(lambda: wanted in texts("holder.scrollHeight"), 20, message=f"{wanted!r} in the region list")
    shot(page, "3-3-drawn-box-transcribed")
    assert not page.plugin_errors.errors


def open_model_menu(page, server, project: int, item: str):
    page.goto(f"{server.url}/projects/{project}/settings/ml")
    card = page.locator(".lsf-backend-card", has_text="Marker OCR")
    card.wait_for()
    card.get_by_role("button", name="Machine learning model options").click()
    page.get_by_text(item, exact=True).click()
    return card


def press_start_training(page, server, project: int):
    """Model tab > the card's menu > Start Training > Start Training; the /train response."""
    open_model_menu(page, server, project, "Start Training")
    modal = page.locator(".lsf-modal-ls", has_text="Start Model Training")
    with page.expect_response(lambda r: re.search(r"/api/ml/\d+/train", r.url) is not None,
                              timeout=120_000) as answer:
        modal.get_by_role("button", name="Start Training").click()
    return answer.value, modal


def test_4_model_tab_test_request_and_start_training(first_project, page, server, http):
    pk = first_project["id"]
    wait_for(lambda: all(t["predictions"] for t in tasks_of(server, http, pk)), 180, interval=1,
             message="the pages' predictions")
    open_model_menu(page, server, pk, "Send Test Request")
    modal = page.locator(".lsf-modal-ls", has_text="Test Request")
    with page.expect_response(lambda r: "/predict/test" in r.url, timeout=120_000) as answer:
        modal.get_by_role("button", name="Send Request").click()
    response_text = modal.locator("pre").last
    wait_for(lambda: response_text.inner_text().strip(), 30, message="the test request's response in the modal")
    shot(page, "4-1-send-test-request")
    assert answer.value.status == 200, f"{answer.value.text()[:2000]}\n{log_lines(server, 'predict|ERROR')}"
    shown = response_text.inner_text()
    assert shown.startswith("200") and "error" not in shown.lower(), shown[:2000]

    # A model that can be fine-tuned: the tiny surya checkpoint the start-up scan registered, picked on the
    # project's OCR page.
    page.goto(f"{server.url}/marker-ls/projects/{pk}/")
    form = page.locator("#mls-engine-form")
    form.locator("label", has_text=TINY_MODEL).locator("input[name=choice]").check()
    form.get_by_role("button", name="Save").click()
    page.locator("[data-field=model-version]", has_text=TINY_MODEL).wait_for()
    shot(page, "4-2-tiny-model-chosen")

    # Nothing annotated yet: refused, with what is missing, and no run recorded.
    refused, _ = press_start_training(page, server, pk)
    assert refused.status == 400, refused.text()
    detail = refused.json()["detail"]
    assert "annotated lines" in detail and "MARKER_LS_MIN_TRAIN_LINES" in detail, detail
    page.get_by_text(re.compile("annotated lines")).first.wait_for()
    shot(page, "4-3-start-training-refused")
    assert runs_of(server, http, pk) == []

    for task in tasks_of(server, http, pk):  # the annotator accepts every predicted line
        [prediction] = [p for p in task["predictions"] if p["model_version"] == "marker-rapidocr-base"]
        api(server, http, "POST", f"/api/tasks/{task['id']}/annotations/",
            json={"result": prediction["result"], "was_cancelled": False, "ground_truth": False})
    accepted, modal = press_start_training(page, server, pk)
    try:
        assert accepted.status == 200, f"{accepted.text()[:2000]}\n{log_lines(server, 'train|run|ERROR')}"
        modal.get_by_text("Response:").wait_for()
        shot(page, "4-4-start-training-link")
        shown = modal.inner_text()
        link = re.search(r"/marker-ls/runs/(\d+)/", shown)
        assert link, f"the modal shows no run link:\n{shown}\n/train answered: {accepted.text()[:1000]}"
        run_id = int(link.group(1))
        page.goto(f"{server.url}{link.group(0)}")
        page.locator(".app-wrapper .mls-run").wait_for()
        shot(page, "4-5-run-page")
        assert f"Started by {server.email}" in " ".join(page.locator(".mls-run").inner_text().split())
        me = api(server, http, "GET", "/api/current-user/whoami")
        assert api(server, http, "GET", f"/marker-ls/api/runs/{run_id}/")["started_by"] == me["id"]
    finally:  # the run itself is not under test: it would train in the server process for minutes
        for run in runs_of(server, http, pk):
            http.post(f"{server.url}/marker-ls/api/runs/{run['id']}/cancel/", timeout=60)
    assert not page.plugin_errors.errors


def test_5_retrain_with_too_few_lines_is_refused(page, server, http):
    demo = project_id(server, http, DEMO_TITLE)
    page.goto(f"{server.url}/marker-ls/")
    row = page.locator("#mls-projects tr").filter(has=page.locator(f"a[href='/projects/{demo}/data']"))
    row.get_by_role("button", name="Retrain").click()
    message = page.locator(".app-wrapper .mls-page[data-mls-page=message]")
    message.wait_for()
    shot(page, "5-1-retrain-refused")
    text = " ".join(message.inner_text().split())
    assert "No run started" in text and "annotated lines" in text and "MARKER_LS_MIN_TRAIN_LINES" in text, text
    assert runs_of(server, http, demo) == []

    refused, _ = press_start_training(page, server, demo)
    assert refused.status == 400, refused.text()
    page.get_by_text(re.compile("annotated lines")).first.wait_for()
    shot(page, "5-2-start-training-refused")
    assert runs_of(server, http, demo) == []
    # The refusal page's own status (400) is the one error the browser reports, as it should.
    unexpected = [e for e in page.plugin_errors.errors if not re.search(r"/runs/start/: .* status of 400", e)]
    assert not unexpected


def test_6_surya_without_weights_says_why_and_what_to_do(page, server, http):
    pk = new_ocr_project(server, http, "First hour: surya")
    page.goto(f"{server.url}/marker-ls/projects/{pk}/")
    form = page.locator("#mls-engine-form")
    form.locator("input[name=choice][value=surya]").check()
    form.get_by_role("button", name="Save").click()
    problem = page.locator("#mls-engine-problem")
    problem.wait_for()
    shot(page, "6-1-project-page-surya-problem")
    text = " ".join(problem.inner_text().split())
    assert "MARKER_LS_SURYA_RECOGNITION_CHECKPOINT" in text and "marker-ls models scan" in text, text
    assert page.locator("[data-field=engine]").inner_text().strip() == "surya"

    card = open_model_menu(page, server, pk, "Edit")
    assert "Error" in card.inner_text(), card.inner_text()
    with page.expect_response(lambda r: re.search(r"/api/ml/\d+", r.url) is not None and r.request.method in
                              ("PATCH", "POST")):
        page.get_by_role("button", name="Save machine learning form").click()
    reason = page.get_by_text(re.compile("MARKER_LS_SURYA_RECOGNITION_CHECKPOINT")).first
    reason.wait_for()
    shot(page, "6-2-model-tab-error")
    shown = " ".join(reason.inner_text().split())
    assert "marker-ls models scan" in shown, shown
    [backend] = api(server, http, "GET", "/api/ml", params={"project": pk})
    assert backend["readable_state"] == "Error" and "MARKER_LS_SURYA_RECOGNITION_CHECKPOINT" in \
        backend["error_message"], json.dumps(backend)[:2000]
    assert not page.plugin_errors.errors

