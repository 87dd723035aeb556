"""Helpers shared by the foundation tests: small real datasets on disk."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path

from sinagot.demo import DEMO_CONFIG, DEMO_SCRIPTS, write_demo_recordings

TWO_RECORDS = ("REC-200331-A", "REC-200331-B")


def write_project(
    root: Path,
    *,
    scripts: Mapping[str, str] | None = None,
    config: str = DEMO_CONFIG,
    records: tuple[str, ...] = TWO_RECORDS,
) -> Path:
    """A dataset of ``records`` with the demo scripts (or ``scripts``); returns the config path."""
    write_demo_recordings(root / "data", records)
    for name, source in (DEMO_SCRIPTS if scripts is None else scripts).items():
        path = root / "scripts" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source), encoding="utf-8")
    config_path = root / "sinagot.toml"
    config_path.write_text(config, encoding="utf-8")
    return config_path


def config_for(
    scripts: Mapping[str, list[str]], tasks: Mapping[str, list[str]], extra: str = ""
) -> str:
    """A config text for modality -> scripts and task -> modalities."""
    lines = [
        '[path]\ndataset = "data"\nscripts = "scripts"\n',
        '[records]\nid_pattern = "REC-\\\\d{6}-[A-Z]"\n',
    ]
    for task, modalities in tasks.items():
        lines.append(f"[tasks.{task}]\nmodalities = {modalities!r}\n".replace("'", '"'))
    for modality, names in scripts.items():
        lines.append(f"[modalities.{modality}]\nscripts = {names!r}\n".replace("'", '"'))
    return "\n".join(lines) + extra
