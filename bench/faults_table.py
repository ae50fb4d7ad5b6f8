"""Write the fault scenarios' figures (JSON lines from tests/faults) as the table in
docs/reliability.md, between its `faults:begin` and `faults:end` markers, with the date and
the machine. Scenarios not in this run keep their previous row."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

BEGIN, END = "<!-- faults:begin -->", "<!-- faults:end -->"
COLUMNS = (
    ("committed", "events sent"),
    ("stored", "stored"),
    ("duplicates", "duplicates before dedupe"),
    ("declared_lost", "declared in gaps"),
    ("missing", "missing"),
)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}"


def row(figures: dict[str, object]) -> str:
    known = {"scenario", "scale"} | {key for key, _ in COLUMNS}
    cells = [f"`{figures['scenario']}`"]
    cells += [str(figures.get(key, "–")) for key, _ in COLUMNS]
    extra = ", ".join(f"{k} {v}" for k, v in figures.items() if k not in known)
    return "| " + " | ".join([*cells, extra or "–"]) + " |"


def main() -> None:
    report, doc = Path(sys.argv[1]), Path(sys.argv[2])
    runs = [json.loads(line) for line in report.read_text().splitlines() if line.strip()]
    text = doc.read_text() if doc.exists() else f"# Reliability\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text:
        text += f"\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    old, tail = rest.split(END, 1)
    rows = {line.split("|")[1].strip(): line for line in old.splitlines() if line.startswith("| `")}
    for figures in runs:
        rows[f"`{figures['scenario']}`"] = row(figures)
    header = "| scenario | " + " | ".join(t for _, t in COLUMNS) + " | other figures |"
    rule = "|" + "---|" * (len(COLUMNS) + 2)
    stamp = time.strftime("%Y-%m-%d")
    scale = {str(f.get("scale")) for f in runs} or {"?"}
    body = [
        "",
        f"Last run: {stamp}, scale {'/'.join(sorted(scale))}, on {machine()}.",
        "",
        header,
        rule,
        *[rows[k] for k in sorted(rows)],
        "",
    ]
    doc.write_text(head + BEGIN + "\n".join(body) + END + tail)
    print(f"{len(runs)} scenario figures written to {doc}")


if __name__ == "__main__":
    main()
