"""Label Studio label configs: the OCR preset, and which tags of a config the OCR results fill."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any, Literal

# The guide's enhanced OCR config: typed rectangles, each with its own required transcription.
OCR_PRESET_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image">
    <Label value="Text" background="green"/>
    <Label value="Handwriting" background="blue"/>
    <Label value="Signature" background="red"/>
    <Label value="Table" background="orange"/>
    <Label value="Diagram" background="purple"/>
  </RectangleLabels>
  <TextArea name="transcription" toName="image" editable="true" perRegion="true" displayMode="region-list"
            required="true"/>
</View>"""

UNDEFINED_KEY = "$undefined$"  # Label Studio's settings.DATA_UNDEFINED_NAME, a constant there

RegionType = Literal["rectanglelabels", "polygonlabels", "rectangle", "polygon"]
_REGION_TAGS = ("rectanglelabels", "polygonlabels", "rectangle", "polygon")


@dataclass
class OCRControls:
    """The tags of a label config that OCR results are written to.

    ``region_type`` is the lower-cased tag of the region control, which is also the ``type`` of its
    results; the plain ``rectangle``/``polygon`` tools carry no labels (``labels`` empty, ``default_label`` "").
    """

    image: str
    image_key: str
    region_control: str
    region_type: RegionType
    textarea: str
    labels: list[str] = field(default_factory=list)
    default_label: str = ""

    @property
    def labeled(self) -> bool:
        """Whether regions carry a label (``rectanglelabels``/``polygonlabels``)."""
        return self.region_type.endswith("labels")


def controls_from_config(label_config_xml: str) -> OCRControls:
    """Find the Image, its region control and its per-region TextArea; ValueError if the config is not OCR-shaped."""
    try:
        root = ET.fromstring(label_config_xml)
    except ET.ParseError as exc:
        raise ValueError(f"the label config is not valid XML: {exc}") from exc
    tags = list(root.iter())
    images = [el for el in tags if _tag(el) == "image"]
    if not images:
        raise ValueError("the label config has no <Image> tag: OCR needs an image to read")
    regions = [el for el in tags if _tag(el) in _REGION_TAGS]
    textareas = [el for el in tags if _tag(el) == "textarea" and _attr(el, "perregion").lower() == "true"]
    if not regions:
        raise ValueError("the label config has no <RectangleLabels> or <PolygonLabels> bound to the image: "
                         "OCR needs a region tool to place text lines")
    if not textareas:
        raise ValueError('the label config has no per-region <TextArea perRegion="true">: '
                         "OCR needs one to hold each line's text")

    candidates = []
    for image in images:
        name = _attr(image, "name")
        bound_regions = [el for el in regions if name in _to_names(el)]
        bound_textareas = [el for el in textareas if name in _to_names(el)]
        if bound_regions and bound_textareas:
            candidates.append((image, bound_regions, bound_textareas))
    if not candidates:
        raise ValueError('no <Image> has both a region tool and a per-region <TextArea perRegion="true"> '
                         "bound to it (check their toName attributes)")
    if len(candidates) > 1:
        names = ", ".join(_attr(image, "name") for image, _, _ in candidates)
        raise ValueError(f"several images could take OCR results ({names}); keep one")
    image, bound_regions, bound_textareas = candidates[0]
    if len(bound_regions) > 1 or len(bound_textareas) > 1:
        raise ValueError(f"the image '{_attr(image, 'name')}' has several region tools or per-region TextAreas "
                         "bound to it; OCR needs exactly one of each")
    return _controls(image, bound_regions[0], bound_textareas[0])


def _controls(image: ET.Element, region: ET.Element, textarea: ET.Element) -> OCRControls:
    value = _attr(image, "value")
    if not value.startswith("$") or len(value) < 2:
        raise ValueError(f"the <Image> value is '{value}'; OCR needs it to name a task field, like value=\"$image\"")
    region_type: RegionType = _tag(region)  # type: ignore[assignment]
    labels = [_attr(el, "value") for el in region.iter() if _tag(el) == "label" and _attr(el, "value")]
    if region_type.endswith("labels") and not labels:
        raise ValueError(f"<{region.tag} name=\"{_attr(region, 'name')}\"> has no <Label value=...> children")
    default_label = "Text" if "Text" in labels else (labels[0] if labels else "")
    return OCRControls(image=_attr(image, "name"), image_key=value[1:], region_control=_attr(region, "name"),
                       region_type=region_type, textarea=_attr(textarea, "name"), labels=labels,
                       default_label=default_label)


def data_image_url(data: dict[str, Any], image_key: str) -> Any:
    """The image URL in a task's data: the one rule, in-process, in the export and in the standalone backend.

    Storage sync with a single-input config stores it under Label Studio's placeholder key
    (``settings.DATA_UNDEFINED_NAME``); Label Studio's API shows it under the config's key.
    """
    return data.get(image_key) or data.get(UNDEFINED_KEY)


def _tag(element: ET.Element) -> str:
    # Label Studio's editor lower-cases tag and attribute names before matching them.
    return element.tag.lower() if isinstance(element.tag, str) else ""


def _attr(element: ET.Element, name: str) -> str:
    for key, value in element.attrib.items():
        if key.lower() == name:
            return value
    return ""


def _to_names(element: ET.Element) -> list[str]:
    return [name.strip() for name in _attr(element, "toname").split(",") if name.strip()]
