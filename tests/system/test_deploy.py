"""docker/label-studio: the guide's services, every variable in .env.example, and commands that parse.

No Docker engine runs here, so this checks the files against the code rather than running them.
"""

import re
import shlex

import yaml
from mls_helpers import ROOT

from marker_ls_plugin.cli import build_parser

DEPLOY = ROOT / "docker" / "label-studio"
COMPOSE_TEXT = (DEPLOY / "docker-compose.yml").read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
ENV_EXAMPLE = dict(line.split("=", 1) for line in (DEPLOY / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))


def test_the_guides_containers_are_there():
    names = {service.get("container_name") for service in COMPOSE["services"].values()}
    assert {"marker-label-studio", "marker-label-studio-postgres", "marker-label-studio-redis",
            "marker-ocr-ml-backend"} <= names


def test_every_variable_has_an_example():
    used = set(re.findall(r"\$\{(\w+)\}", COMPOSE_TEXT))
    assert used <= set(ENV_EXAMPLE), used - set(ENV_EXAMPLE)
    assert ENV_EXAMPLE["LABEL_STUDIO_USERNAME"] == "admin@example.com"  # the guide's default login


def test_commands_are_real_marker_ls_subcommands():
    for name, service in COMPOSE["services"].items():
        command = service.get("command")
        if not command:
            continue
        words = [re.sub(r"\$\{(\w+)\}", lambda m: ENV_EXAMPLE[m.group(1)], word) for word in command]
        assert words[0] == "marker-ls", name
        build_parser().parse_args(words[1:])  # exits (fails the test) on an unknown option


def test_the_image_installs_surya_deliberately():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "pip install --no-deps surya-ocr==0.17.1" in dockerfile
    assert "-c requirements/constraints.txt" in dockerfile
    assert shlex.split(dockerfile.split("CMD", 1)[1].strip().strip("[]").replace(",", " "))[0] == "marker-ls"
    assert (DEPLOY / "models" / "recognition").is_dir()  # where the guide says fine-tuned models go
