"""Label configs read for OCR, lines turned into Label Studio results, and drawn regions turned back."""

from __future__ import annotations

import math

import pytest
from label_studio_sdk.label_interface import LabelInterface

from marker_ls_plugin.ocr.labeling import OCR_PRESET_CONFIG, OCRControls, controls_from_config
from marker_ls_plugin.ocr.results import (
    line_to_regions,
    page_to_results,
    prediction_score,
    region_to_polygon,
)
from marker_ls_plugin.ocr.types import OCRLine, PageOCR

W, H = 1000, 500
POLYGON_CONFIG = """<View>
  <Image name="page" value="$scan"/>
  <PolygonLabels name="lines" toName="page"><Label value="Printed"/><Label value="Handwriting"/></PolygonLabels>
  <TextArea name="text" toName="page" perRegion="true"/>
</View>"""
PLAIN_RECTANGLE_CONFIG = """<view>
  <image name="img" value="$ocr"/>
  <Rectangle name="box" toName="img" strokeWidth="2"/>
  <TextArea name="words" toName="img" perregion="true"/>
  <TextArea name="comment" toName="img"/>
</view>"""


def rotated_box(x: float, y: float, width: float, height: float, degrees: float) -> list[tuple[float, float]]:
    """Corners clockwise from the top-left of a box turned clockwise (y down) around its top-left corner."""
    a = math.radians(degrees)
    along, down = (math.cos(a), math.sin(a)), (-math.sin(a), math.cos(a))
    return [(x, y), (x + width * along[0], y + width * along[1]),
            (x + width * along[0] + height * down[0], y + width * along[1] + height * down[1]),
            (x + height * down[0], y + height * down[1])]


def assert_close_polygons(got, expected, tolerance=0.01):
    assert len(got) == len(expected)
    for (gx, gy), (ex, ey) in zip(got, expected, strict=True):
        assert abs(gx - ex) < tolerance and abs(gy - ey) < tolerance, (got, expected)


@pytest.fixture
def preset():
    return controls_from_config(OCR_PRESET_CONFIG)


# --- label configs ----------------------------------------------------------------------------------


def test_preset_config_controls_and_label_studio_accepts_it(preset):
    from core.label_config import validate_label_config

    validate_label_config(OCR_PRESET_CONFIG)  # Label Studio's own check, raises on an invalid config
    assert preset == OCRControls(image="image", image_key="image", region_control="label",
                                 region_type="rectanglelabels", textarea="transcription",
                                 labels=["Text", "Handwriting", "Signature", "Table", "Diagram"], default_label="Text")


def test_polygon_config_defaults_to_its_first_label():
    controls = controls_from_config(POLYGON_CONFIG)
    assert (controls.image, controls.image_key, controls.region_control, controls.region_type, controls.textarea) == (
        "page", "scan", "lines", "polygonlabels", "text")
    assert controls.labels == ["Printed", "Handwriting"] and controls.default_label == "Printed"


def test_plain_rectangle_in_lower_case_tags_has_no_labels():
    controls = controls_from_config(PLAIN_RECTANGLE_CONFIG)
    assert (controls.region_control, controls.region_type, controls.textarea) == ("box", "rectangle", "words")
    assert controls.labels == [] and controls.default_label == "" and not controls.labeled


@pytest.mark.parametrize(("config", "message"), [
    ('<View><Text name="t" value="$text"/><Choices name="c" toName="t"><Choice value="a"/></Choices></View>',
     "no <Image>"),
    ('<View><Image name="i" value="$image"/><TextArea name="x" toName="i" perRegion="true"/></View>',
     "no <RectangleLabels> or <PolygonLabels>"),
    ('<View><Image name="i" value="$image"/><RectangleLabels name="r" toName="i"><Label value="A"/>'
     '</RectangleLabels><TextArea name="x" toName="i"/></View>', "per-region"),
    ('<View><Image name="i" value="$image"/><Image name="j" value="$other"/><RectangleLabels name="r" toName="j">'
     '<Label value="A"/></RectangleLabels><TextArea name="x" toName="i" perRegion="true"/></View>', "toName"),
    ('<View><Image name="i" value="$image"/><RectangleLabels name="r" toName="i"><Label value="A"/></RectangleLabels>'
     '<PolygonLabels name="p" toName="i"><Label value="A"/></PolygonLabels>'
     '<TextArea name="x" toName="i" perRegion="true"/></View>', "several"),
    ('<View><Image name="i" value="$a"/><Image name="j" value="$b"/><Rectangle name="r" toName="i,j"/>'
     '<TextArea name="x" toName="i,j" perRegion="true"/></View>', "several images"),
    ('<View><Image name="i" value="https://example.com/x.png"/><Rectangle name="r" toName="i"/>'
     '<TextArea name="x" toName="i" perRegion="true"/></View>', 'value="$image"'),
    ("<View><Image", "not valid XML"),
])
def test_configs_that_are_not_ocr_shaped_say_why(config, message):
    with pytest.raises(ValueError) as raised:
        controls_from_config(config)
    assert message in str(raised.value)


# --- geometry ---------------------------------------------------------------------------------------


def test_axis_aligned_line(preset):
    line = OCRLine([(100, 50), (300, 50), (300, 80), (100, 80)], "Hello", 0.9)
    region, text = line_to_regions(line, W, H, preset, "r1")
    assert region["id"] == text["id"] == "r1"
    assert (region["from_name"], region["to_name"], region["type"]) == ("label", "image", "rectanglelabels")
    assert (text["from_name"], text["to_name"], text["type"]) == ("transcription", "image", "textarea")
    geometry = {"x": 10, "y": 10, "width": 20, "height": 6, "rotation": 0}
    assert region["value"].pop("rectanglelabels") == ["Text"] and region["value"] == pytest.approx(geometry)
    assert text["value"].pop("text") == ["Hello"] and text["value"] == pytest.approx(geometry)
    for item in (region, text):
        assert (item["original_width"], item["original_height"], item["image_rotation"]) == (W, H, 0)
    assert region["score"] == 0.9 and "score" not in text


@pytest.mark.parametrize(("degrees", "expected_rotation"), [(3, 3), (-3, 357), (90, 90), (180, 180), (-90, 270)])
def test_rotated_lines_round_trip(preset, degrees, expected_rotation):
    polygon = rotated_box(400, 200, 150, 24, degrees)
    region, text = line_to_regions(OCRLine(polygon, "tilted", 0.5), W, H, preset, "r")
    value = region["value"]
    assert value["rotation"] == pytest.approx(expected_rotation)
    assert 0 <= value["rotation"] < 360
    assert value["width"] == pytest.approx(15) and value["height"] == pytest.approx(24 / H * 100)
    assert (value["x"], value["y"]) == pytest.approx((40, 40))
    assert_close_polygons(region_to_polygon(value, W, H), polygon)
    assert_close_polygons(region_to_polygon(text["value"], W, H), polygon)


def test_slanted_quadrilateral_keeps_its_perpendicular_height(preset):
    # An italic line: the left edge leans 10 px right over 20 px of height.
    line = OCRLine([(100, 100), (300, 100), (310, 120), (110, 120)], "italic", 0.8)
    value = line_to_regions(line, W, H, preset, "r")[0]["value"]
    assert value["height"] == pytest.approx(20 / H * 100) and value["rotation"] == 0


def test_points_outside_the_image_are_clamped(preset):
    line = OCRLine([(-2, -1), (1003, -1), (1003, 30), (-2, 30)], "edge", 0.7)
    value = line_to_regions(line, W, H, preset, "r")[0]["value"]
    assert value["x"] == 0 and value["y"] == 0 and value["width"] == pytest.approx(100)


def test_polygon_regions_round_trip():
    controls = controls_from_config(POLYGON_CONFIG)
    polygon = rotated_box(120, 300, 400, 30, 2)
    region, text = line_to_regions(OCRLine(polygon, "poly", 0.6), W, H, controls, "p1", label="Handwriting")
    assert region["type"] == "polygonlabels" and region["value"]["polygonlabels"] == ["Handwriting"]
    assert region["value"]["points"][0] == pytest.approx([12, 60])
    assert text["value"]["points"] == region["value"]["points"] and text["value"]["text"] == ["poly"]
    assert_close_polygons(region_to_polygon(region["value"], W, H), polygon)


def test_drawn_rectangle_from_the_editor_becomes_a_pixel_polygon():
    # A region as the editor sends it in context.result (values from label-studio-ml-backend's tesseract test).
    value = {"x": 2.5893958076448826, "y": 15.59725018943566, "width": 44.38964241676942,
             "height": 12.438313442208186, "rotation": 0, "rectanglelabels": ["Label1"]}
    polygon = region_to_polygon(value, 1080, 1349)
    assert_close_polygons(polygon, [(27.965, 210.407), (507.374, 210.407), (507.374, 378.201), (27.965, 378.201)])


def test_plain_rectangle_results_carry_no_labels():
    controls = controls_from_config(PLAIN_RECTANGLE_CONFIG)
    region, text = line_to_regions(OCRLine([(0, 0), (10, 0), (10, 5), (0, 5)], "x", 1.0), W, H, controls, "r")
    assert region["type"] == "rectangle" and set(region["value"]) == {"x", "y", "width", "height", "rotation"}
    assert text["from_name"] == "words"


# --- pages and scores -------------------------------------------------------------------------------


def page() -> PageOCR:
    return PageOCR(W, H, [OCRLine(rotated_box(50, 40 + 40 * i, 600, 30, i - 1), f"line {i}", c)
                          for i, c in enumerate([0.97, 0.41, 0.88])])


def test_page_results_have_stable_distinct_ids(preset):
    first, again = page_to_results(page(), preset), page_to_results(page(), preset)
    assert first == again and len(first) == 6
    ids = [item["id"] for item in first]
    assert ids[0::2] == ids[1::2] and len(set(ids)) == 3
    assert all(len(i) == 10 for i in ids)
    assert {item["value"]["rectanglelabels"][0] for item in first[0::2]} == {"Text"}
    assert page_to_results(page(), preset, label="Handwriting")[0]["value"]["rectanglelabels"] == ["Handwriting"]


def test_prediction_score_is_the_least_confident_line():
    assert prediction_score(page().lines) == pytest.approx(0.41)
    assert prediction_score([]) is None
    assert prediction_score([OCRLine([(0, 0)] * 4, "", 1.7)]) == 1.0  # clamped into Label Studio's [0, 1]


# --- Label Studio's own validation -----------------------------------------------------------------


@pytest.mark.parametrize("config", [OCR_PRESET_CONFIG, POLYGON_CONFIG, PLAIN_RECTANGLE_CONFIG])
def test_results_pass_label_studios_prediction_validator(config):
    # The check Label Studio's PredictionSerializer and task import run (behind a feature flag in 1.23).
    controls = controls_from_config(config)
    results = page_to_results(page(), controls)
    prediction = {"result": results, "score": prediction_score(page().lines), "model_version": "test"}
    assert LabelInterface(config).validate_prediction(prediction, return_errors=True) == []
    assert LabelInterface(config).validate_prediction({"result": results, "score": None}, return_errors=True) == []


def test_the_validator_is_not_a_rubber_stamp(preset):
    results = page_to_results(page(), preset, label="NotALabel")
    assert LabelInterface(OCR_PRESET_CONFIG).validate_prediction({"result": results}, return_errors=True)


def test_predictions_save_through_label_studios_models(preset):
    from mls_factories import make_project
    from tasks.models import Prediction, Task

    project = make_project("ocr results")
    project.label_config = OCR_PRESET_CONFIG
    project.save()
    task = Task.objects.create(project=project, data={"image": "/data/upload/1/page.png"})
    results = page_to_results(page(), preset)
    prediction = Prediction.objects.create(task=task, project=project, result=results,
                                           score=prediction_score(page().lines), model_version="ocr-test")
    prediction.refresh_from_db()
    assert prediction.result == results and prediction.score == pytest.approx(0.41)
