"""Result files shared by the long-running commands (``utils.evaluate``, ``utils.study``): CSV rows written
atomically, and a settings file that keeps a resumed run from mixing results made with other settings."""
from __future__ import annotations

import csv
import json
from pathlib import Path


def read_csv(path) -> list[dict]:
    """The rows of a CSV file with a header, as dicts of strings."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path, rows: list[dict], decimals: int | None = None) -> None:
    """Write dict rows (the first row's keys as header; floats rounded to ``decimals`` if given) via a temporary
    file, so that an interrupted run never leaves half a file that a resumed run would trust."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    if decimals is not None:
        rows = [{k: (f"{v:.{decimals}f}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows]
    with open(partial, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    partial.replace(path)


def check_settings(out, settings: dict, keys=None) -> None:
    """Store ``settings`` in ``out/config.json``, or, if it is there already, raise unless the stored settings
    agree on ``keys`` (default: all of them): results made with other settings must not be mixed."""
    out = Path(out)
    path = out / "config.json"
    settings = json.loads(json.dumps(settings))  # tuples -> lists, as they come back from the file
    if not path.exists():
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings, indent=1) + "\n")
        return
    stored = json.loads(path.read_text())
    diff = {k: (stored.get(k), settings.get(k)) for k in (keys or settings) if stored.get(k) != settings.get(k)}
    if diff:
        raise ValueError(f"{out} holds results made with other settings {diff} (stored, requested): "
                         "use another --out or delete it")
