"""The files ``sinagot init`` writes: a commented ``sinagot.toml`` and an example script."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["EXAMPLE_SCRIPT", "Layout", "example_script", "render_config"]

EXAMPLE_SCRIPT = "summary"

_SCRIPT = '''"""Example script of the @MODALITY@ modality, written by `sinagot init`: make it yours.

It runs once for each record and task that has @MODALITY@ data. It reads the files of
<record>/<task>/@MODALITY@/ and writes what they are (name, size, MD5, lines of text
files) to <record>/derivatives/<task>/@MODALITY@/summary.json. Replace run() with the
processing; list more scripts in [modalities.@MODALITY@] scripts of sinagot.toml, in order.
"""

import hashlib
import json

from sinagot import ScriptTemplate


class Script(ScriptTemplate):
    PATH_IN = ("{id}", "{task}", "@MODALITY@")
    PATH_OUT = ("{id}", "derivatives", "{task}", "@MODALITY@", "summary.json")
    # Part of the provenance: changing a parameter reruns the script.
    PARAMETERS = {"chunk_bytes": 1 << 20}

    def run(self):
        files = [self.describe(path) for path in sorted(self.path.input.rglob("*")) if path.is_file()]
        summary = {"record": self.id, "task": self.task, "files": files}
        with open(self.path.output, "w") as handle:
            json.dump(summary, handle, indent=2, sort_keys=True)
        self.logger.info("%s %s: %d @MODALITY@ file(s)", self.id, self.task, len(files))

    def describe(self, path):
        md5 = hashlib.md5()
        size = lines = 0
        text = True
        with open(path, "rb") as handle:
            while chunk := handle.read(self.PARAMETERS["chunk_bytes"]):
                md5.update(chunk)
                size += len(chunk)
                lines += chunk.count(b"\\n")
                text = text and b"\\0" not in chunk
        described = {
            "name": path.relative_to(self.path.input).as_posix(),
            "bytes": size,
            "md5": md5.hexdigest(),
        }
        if text:
            described["lines"] = lines
        return described
'''


def example_script(modality: str) -> str:
    """The example script of ``modality`` (a valid config name, so safe in Python source)."""
    return _SCRIPT.replace("@MODALITY@", modality)


def _string(value: str) -> str:
    # A JSON string is a valid TOML basic string (same escapes).
    return json.dumps(value, ensure_ascii=False)


def _names(values: Sequence[str]) -> str:
    return "[" + ", ".join(_string(v) for v in values) + "]"


@dataclass(frozen=True, slots=True)
class Layout:
    """What the survey found: where it came from (``noun``: what its labels name), the
    pattern and the tasks' modalities."""

    source: str
    noun: str
    sessions: int
    sampled: int
    id_pattern: str
    unmatched: tuple[str, ...]
    tasks: Mapping[str, tuple[str, ...]]

    @property
    def modalities(self) -> list[str]:
        return list(dict.fromkeys(m for names in self.tasks.values() for m in names))


def _header(layout: Layout) -> list[str]:
    when = time.strftime("%Y-%m-%d")
    return [
        f"# Sinagot dataset config, written by `sinagot init` on {when} from",
        f"# {layout.source} ({layout.sampled} of its {layout.sessions} {layout.noun}s looked into).",
        "# Paths are relative to this file. Check it, make the scripts in scripts/ yours, then:",
        "#   sinagot ids sinagot.toml      the records",
        "#   sinagot run sinagot.toml      run what is not up to date",
        "",
    ]


def _records(layout: Layout) -> list[str]:
    lines = [
        "[records]",
        "# The labels that are records (a regular expression matching the whole label),",
        "# guessed from the labels listed.",
    ]
    if layout.unmatched:
        shown = ", ".join(repr(label) for label in layout.unmatched[:5])
        more = f" and {len(layout.unmatched) - 5} more" if len(layout.unmatched) > 5 else ""
        lines.append(f"# Not matching, so ignored: {shown}{more}.")
    lines += [f"id_pattern = {_string(layout.id_pattern)}", ""]
    return lines


def _tasks(layout: Layout, what: str) -> list[str]:
    lines = [f"# Tasks are {what}, each with the modalities recorded during it."]
    for task, modalities in layout.tasks.items():
        lines += [f"[tasks.{task}]", f"modalities = {_names(modalities)}", ""]
    lines.append("# Each modality's scripts, run in order (scripts/<modality>/<name>.py).")
    for modality in layout.modalities:
        lines += [f"[modalities.{modality}]", f'scripts = ["{EXAMPLE_SCRIPT}"]', ""]
    return lines


_TAIL = [
    "[run]",
    'mode = "main_process"               # or "dask" (see [dask])',
    "",
    "[log]",
    'level = "INFO"',
    "",
]


def render_config(
    layout: Layout,
    *,
    dataset: str,
    store: Mapping[str, str] | None = None,
) -> str:
    """The text of ``sinagot.toml``; ``store``: the ``[store]`` keys of a server (None: local)."""
    lines = _header(layout)
    if store is None:
        lines += ["[path]", f"dataset = {_string(dataset)}", 'scripts = "scripts"', ""]
    else:
        lines += [
            "[path]",
            "# The work tree: inputs linked from the cache, outputs until they are uploaded.",
            f"dataset = {_string(dataset)}",
            'scripts = "scripts"',
            "",
        ]
    lines += _records(layout)
    lines += _tasks(layout, "folders" if store is None else "scan types")
    if store is not None:
        lines += [
            "[store]",
            'type = "xnat"',
            *(f"{key} = {_string(value)}" for key, value in store.items()),
            "# No password here: it comes from the systemd credential password_credential",
            "# names, else $SINAGOT_XNAT_PASSWORD, else ~/.netrc (machine HOST login USER",
            "# password ...).",
            '# cache_dir = "/var/cache/sinagot"  # default: $CACHE_DIRECTORY, or the user cache',
            "",
        ]
    lines += _TAIL
    if store is not None:
        lines += [
            "# For `sinagot daemon sinagot.toml` (see the README's Operating the daemon):",
            "# [daemon]",
            "# poll_interval = 60",
            '# metrics_address = "9464"          # Prometheus /metrics on 127.0.0.1:9464',
            "",
        ]
    return "\n".join(lines)
