"""`clobi session init` writes every key a session config takes, each with its default."""

from __future__ import annotations

import re
import tomllib

import pytest
from pydantic import BaseModel

from resource_manager.template import SESSION_TOML
from shared.models import AutoscaleConfig, Ec2Cloud, LocalCloud, ReleaseConfig, SessionConfig

SECTIONS = {
    "": SessionConfig,
    "[autoscale]": AutoscaleConfig,
    '# [releases."1.0"]': ReleaseConfig,
    "[[clouds]]": LocalCloud,
    "# [[clouds]]": Ec2Cloud,
}


def _sections() -> dict[str, dict[str, tuple[str, bool]]]:
    """Each section's keys: (value, commented out), by section header."""
    found: dict[str, dict[str, tuple[str, bool]]] = {"": {}}
    current = ""
    for line in SESSION_TOML.splitlines():
        header = line.strip()
        if header.lstrip("# ").startswith("[") and header.endswith("]"):
            current = header
            found.setdefault(current, {})
            continue
        match = re.match(r"^(# )?([a-z_]+) = (.+?)(\s+#.*)?$", line)
        if match:
            found[current][match.group(2)] = (match.group(3), bool(match.group(1)))
    return found


@pytest.mark.parametrize("header", SECTIONS)
def test_the_template_names_every_key_and_a_commented_key_shows_its_default(header: str) -> None:
    model: type[BaseModel] = SECTIONS[header]
    written = _sections()[header]
    nested = {"releases", "clouds", "autoscale"} if model is SessionConfig else set()
    assert set(model.model_fields) - nested == set(written), header
    for key, (text, commented) in written.items():
        field = model.model_fields[key]
        if not commented or field.is_required() or field.default in (None, ()):
            continue  # a value chosen for this session, or an example of an optional key
        if header == "# [[clouds]]" and key in ("driver",):
            continue
        value = tomllib.loads(f"v = {text}")["v"]
        assert value == field.default, (header, key, value, field.default)
