"""Helpers shared by the foundation tests: small real datasets on disk."""

from __future__ import annotations

import signal
import subprocess
import textwrap
import time
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


def kill_when_started(
    command: list[str], marker: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Run ``command``, SIGKILL it once it wrote ``marker`` (within 60 s), and reap it."""
    child = subprocess.Popen(command, env=None if env is None else dict(env))
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.05)
        assert marker.exists(), "the child never started its step"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    return child
