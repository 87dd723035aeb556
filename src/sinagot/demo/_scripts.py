"""The demo's scripts and config, written as files next to the demo data.

They are kept as text here because they are user files: the demo writes them
into the scripts folder, where users can read and edit them.
"""

from __future__ import annotations

__all__ = ["DEMO_CONFIG", "DEMO_SCRIPTS"]

_PREPROCESS = '''"""Remove each channel's linear trend, then smooth it with a moving average."""

import csv

from sinagot import ScriptTemplate


class Script(ScriptTemplate):
    PATH_IN = ("{id}", "{task}", "EEG", "raw.csv")
    PATH_OUT = ("{id}", "derivatives", "{task}", "EEG", "filtered.csv")
    PARAMETERS = {"window": 5}

    def run(self):
        with open(self.path.input, newline="") as handle:
            rows = list(csv.reader(handle))
        header, data = rows[0], [[float(v) for v in row] for row in rows[1:]]
        times = [row[0] for row in data]
        channels = [[row[c] for row in data] for c in range(1, len(header))]
        filtered = [self.smooth(self.detrend(times, values)) for values in channels]
        with open(self.path.output, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            for index, t in enumerate(times):
                writer.writerow([f"{t:.5f}", *(f"{ch[index]:.4f}" for ch in filtered)])
        self.logger.info("%s %s: filtered %d channels", self.id, self.task, len(channels))

    @staticmethod
    def detrend(times, values):
        n = len(values)
        mean_t, mean_v = sum(times) / n, sum(values) / n
        var_t = sum((t - mean_t) ** 2 for t in times)
        slope = sum((t - mean_t) * (v - mean_v) for t, v in zip(times, values)) / var_t
        return [v - mean_v - slope * (t - mean_t) for t, v in zip(times, values)]

    def smooth(self, values):
        half = self.PARAMETERS["window"] // 2
        result = []
        for index in range(len(values)):
            window = values[max(0, index - half) : index + half + 1]
            result.append(sum(window) / len(window))
        return result
'''

_SPECTRUM = '''"""Power of the classic EEG frequency bands, from the filtered signal."""

import cmath
import csv
import json
import math

from sinagot import ScriptTemplate


class Script(ScriptTemplate):
    PATH_IN = ("{id}", "derivatives", "{task}", "EEG", "filtered.csv")
    PATH_OUT = ("{id}", "derivatives", "{task}", "EEG", "bands.json")
    PARAMETERS = {"bands": {"delta": [1, 4], "theta": [4, 8], "alpha": [8, 13], "beta": [13, 30]}}

    def run(self):
        with open(self.path.input, newline="") as handle:
            rows = list(csv.reader(handle))
        header, data = rows[0], [[float(v) for v in row] for row in rows[1:]]
        rate = (len(data) - 1) / (data[-1][0] - data[0][0])
        result = {}
        for column, channel in enumerate(header[1:], start=1):
            values = [row[column] for row in data]
            result[channel] = {
                band: round(self.power(values, rate, low, high), 4)
                for band, (low, high) in self.PARAMETERS["bands"].items()
            }
        with open(self.path.output, "w") as handle:
            json.dump(result, handle, indent=2, sort_keys=True)
        alpha = sum(bands["alpha"] for bands in result.values()) / len(result)
        self.logger.info("%s %s: mean alpha power %.2f", self.id, self.task, alpha)

    @staticmethod
    def power(values, rate, low, high):
        n = len(values)
        total = 0.0
        for k in range(1, n // 2):
            frequency = k * rate / n
            if low <= frequency < high:
                coefficient = sum(
                    v * cmath.exp(-2j * math.pi * k * i / n) for i, v in enumerate(values)
                )
                total += abs(coefficient) ** 2 / n**2
        return total
'''

_SCORE = '''"""A vigilance score from the clinical questionnaire."""

import json

from sinagot import ScriptTemplate


class Script(ScriptTemplate):
    PATH_IN = ("{id}", "{task}", "clinical", "answers.json")
    PATH_OUT = ("{id}", "derivatives", "{task}", "clinical", "score.json")

    def run(self):
        with open(self.path.input) as handle:
            answers = json.load(handle)
        score = {
            "record": self.id,
            "task": self.task,
            "alertness": answers["vigilance"] - answers["fatigue"],
            "age_group": "18-40" if answers["age"] <= 40 else "41-65",
        }
        with open(self.path.output, "w") as handle:
            json.dump(score, handle, indent=2, sort_keys=True)
'''

_ACCURACY = '''"""Accuracy and mean reaction time of the HDC behavioral responses."""

import csv
import json

from sinagot import ScriptTemplate


class Script(ScriptTemplate):
    PATH_IN = ("{id}", "HDC", "behavior", "responses.csv")
    PATH_OUT = ("{id}", "derivatives", "HDC", "behavior", "accuracy.json")

    def run(self):
        with open(self.path.input, newline="") as handle:
            trials = list(csv.DictReader(handle))
        correct = [t for t in trials if t["stimulus"] == t["response"]]
        times = [float(t["reaction_time_ms"]) for t in correct]
        result = {
            "trials": len(trials),
            "accuracy": round(len(correct) / len(trials), 4),
            "mean_reaction_time_ms": round(sum(times) / len(times), 1),
        }
        with open(self.path.output, "w") as handle:
            json.dump(result, handle, indent=2, sort_keys=True)
'''

DEMO_SCRIPTS: dict[str, str] = {
    "EEG/preprocess.py": _PREPROCESS,
    "EEG/spectrum.py": _SPECTRUM,
    "clinical/score.py": _SCORE,
    "behavior/accuracy.py": _ACCURACY,
}

DEMO_CONFIG = """\
# Sinagot demo configuration: paths are relative to this file.
[path]
dataset = "data"
scripts = "scripts"

[records]
id_pattern = "REC-\\\\d{6}-[A-Z]"

[tasks.RS]
modalities = ["EEG", "clinical"]

[tasks.MMN]
modalities = ["EEG", "clinical"]

[tasks.HDC]
modalities = ["EEG", "clinical", "behavior"]

[modalities.EEG]
scripts = ["preprocess", "spectrum"]

[modalities.clinical]
scripts = ["score"]

[modalities.behavior]
scripts = ["accuracy"]

[run]
mode = "main_process"

[dask]
n_workers = 2
threads_per_worker = 1
processes = false

[log]
level = "INFO"
"""
