"""Auto-annotation reads the region the annotator just drew, whatever else Label Studio sends with it.

Label Studio 1.23.2's editor sends only the regions that finished drawing (``regionFinishedDrawing``, filtered
by id); other clients send the whole annotation, predicted regions first and manual ones last, each
transcribed region followed by its textarea item. Both shapes must lead to the same region.
"""

from __future__ import annotations

import pytest

from marker_ls_plugin.ml.protocol import BadRequest, region_to_read
from marker_ls_plugin.ocr.labeling import OCR_PRESET_CONFIG, controls_from_config

POLYGON_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <PolygonLabels name="label" toName="image"><Label value="Text"/></PolygonLabels>
  <TextArea name="transcription" toName="image" editable="true" perRegion="true"/>
</View>"""


def rectangle(region_id: str, origin: str, rotation: float = 0) -> dict:
    return {"id": region_id, "origin": origin, "from_name": "label", "to_name": "image", "type": "rectanglelabels",
            "original_width": 1000, "original_height": 400, "image_rotation": 0,
            "value": {"x": 10, "y": 20, "width": 30, "height": 8, "rotation": rotation, "rectanglelabels": ["Text"]}}


def polygon(region_id: str, origin: str) -> dict:
    return {"id": region_id, "origin": origin, "from_name": "label", "to_name": "image", "type": "polygonlabels",
            "original_width": 1000, "original_height": 400, "image_rotation": 0,
            "value": {"points": [[10, 20], [40, 21], [40, 29], [10, 28]], "polygonlabels": ["Text"]}}


def text(region: dict, *lines: str) -> dict:
    """The region's per-region textarea item, as Label Studio serializes it (same id, the region's geometry)."""
    value = {key: item for key, item in region["value"].items() if not key.endswith("labels")}
    return {**region, "from_name": "transcription", "type": "textarea", "value": {**value, "text": list(lines)}}


def whole_annotation(make, drawn: dict) -> list[dict]:
    predicted = [make(f"pred-{index}", "prediction") for index in range(3)]
    items = [item for region in predicted for item in (region, text(region, f"line {region['id']}"))]
    return [*items, drawn]


@pytest.mark.parametrize("config, make, drawn", [
    (OCR_PRESET_CONFIG, rectangle, rectangle("drawn", "manual")),
    (OCR_PRESET_CONFIG, rectangle, rectangle("drawn", "manual", rotation=12.5)),
    (POLYGON_CONFIG, polygon, polygon("drawn", "manual")),
], ids=["rectangle", "rotated rectangle", "polygon"])
def test_the_drawn_region_is_read_among_the_whole_annotation(config, make, drawn):
    controls = controls_from_config(config)
    assert region_to_read(whole_annotation(make, drawn), controls) is drawn
    # an empty textarea item for it (a client that serializes one) does not count as a transcription
    assert region_to_read([*whole_annotation(make, drawn), text(drawn)], controls) is drawn
    assert region_to_read([drawn], controls) is drawn  # Label Studio's editor: the drawn region only


def test_the_newest_untranscribed_manual_region_wins_over_transcribed_ones():
    controls = controls_from_config(OCR_PRESET_CONFIG)
    typed, drawn = rectangle("typed", "manual"), rectangle("drawn", "manual", rotation=-8)
    context = [*whole_annotation(rectangle, drawn), typed, text(typed, "already typed")]
    assert region_to_read(context, controls) is drawn


def test_a_context_without_regions_is_a_bad_request():
    with pytest.raises(BadRequest, match="no rectanglelabels region"):
        region_to_read([], controls_from_config(OCR_PRESET_CONFIG))
