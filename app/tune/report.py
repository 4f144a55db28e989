"""The tune report: JSON (`--report`, default `<out>/tune-report.json`) and a PNG beside it (same name, .png) that
draws the loss curve and the held-out metrics before and after. matplotlib is imported inside (Agg, no display).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def png_path(report: Path) -> Path:
    return report.with_suffix(".png")


def write_report(report: Path, data: dict[str, Any]) -> Path:
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    draw(png_path(report), data)
    return report


def draw(path: Path, data: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    losses = data.get("losses") or []
    left.plot(range(1, len(losses) + 1), losses, color="tab:blue")
    left.set_xlabel("step")
    left.set_ylabel(f"loss ({data.get('loss', '')})")
    left.set_title(f"training loss, ZeRO stage {data.get('zero_stage')}")
    left.grid(alpha=0.3)

    names = [n for n in data.get("before", {}) if _number(data["before"].get(n)) or _number(data["after"].get(n))]
    x = range(len(names))
    before = [data["before"].get(n) if _number(data["before"].get(n)) else 0.0 for n in names]
    after = [data["after"].get(n) if _number(data["after"].get(n)) else 0.0 for n in names]
    right.bar([i - 0.2 for i in x], before, width=0.4, label="before", color="tab:gray")
    right.bar([i + 0.2 for i in x], after, width=0.4, label="after", color="tab:green")
    for i, (b, a) in enumerate(zip(before, after, strict=True)):
        right.text(i - 0.2, b, f"{b:.3f}", ha="center", va="bottom", fontsize=8)
        right.text(i + 0.2, a, f"{a:.3f}", ha="center", va="bottom", fontsize=8)
    right.set_xticks(list(x), names)
    right.set_title(f"held-out ({data.get('eval', {}).get('pairs', '?')} pairs)")
    right.axhline(0, color="black", linewidth=0.5)
    right.legend()
    fig.suptitle(f"wenmo tune {data.get('role')}: {data.get('model')}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
