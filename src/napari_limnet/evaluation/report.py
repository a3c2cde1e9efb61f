"""Tables (Markdown, also printed) and the Dice-versus-clicks plot from the per-object records."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from .protocol import DICE_AT, NOC_AT, NOC_CAP

METRICS = [f"dice@{k}" for k in DICE_AT] + [f"noc@{round(t * 100)}" for t in NOC_AT]
HEADERS = ["objects", *(m.replace("dice", "Dice").replace("noc", "NoC") for m in METRICS), "s/click (median)"]
ALL = "all sources (mean of sources)"
POOLED = "all objects (pooled)"


def _group_key(record: dict, by: str) -> str:
    return record["source"] if by == "source" else f"{record['source']}:{record['label']}"


def summary_rows(records: list[dict], by: str = "source") -> list[dict]:
    """One row per (group, method): mean of each metric over the group's objects, median seconds per
    click over all its clicks. ``by`` is "source" (plus, per method, a row averaging the sources, so a
    large source does not drown the others, and one averaging all objects alike, as a target "over
    all objects" is stated) or "structure" (source and label value)."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in records:
        groups[(_group_key(r, by), r["method"])].append(r)
    rows = [_mean_row(group, method, items) for (group, method), items in sorted(groups.items())]
    if by == "source" and len({row["group"] for row in rows}) > 1:
        rows += _mean_of_groups(rows, records)
        rows += [_mean_row(POOLED, method, [r for r in records if r["method"] == method])
                 for method in sorted({r["method"] for r in records})]
    return rows


def _mean_row(group: str, method: str, items: list[dict]) -> dict:
    """Mean of each metric over ``items`` (objects), median seconds over all their clicks."""
    row = {"group": group, "method": method, "objects": len(items)}
    for m in METRICS:
        values = [r[m] for r in items if m in r]
        row[m] = float(np.mean(values)) if values else None
    row["s/click"] = float(np.median([s for r in items for s in r["seconds"]]))
    return row


def _mean_of_groups(rows: list[dict], records: list[dict]) -> list[dict]:
    out = []
    for method in sorted({row["method"] for row in rows}):
        mine = [row for row in rows if row["method"] == method]
        row = {"group": ALL, "method": method, "objects": sum(r["objects"] for r in mine)}
        for m in METRICS:
            values = [r[m] for r in mine if r[m] is not None]
            row[m] = float(np.mean(values)) if len(values) == len(mine) else None
        row["s/click"] = float(np.median([s for r in records if r["method"] == method for s in r["seconds"]]))
        out.append(row)
    return out


def markdown_table(rows: list[dict], group_title: str) -> str:
    def cell(metric, value):
        if value is None:
            return "–"
        return f"{value:.1f}" if metric.startswith("noc") else f"{value:.3f}"

    lines = [f"| {group_title} | method | " + " | ".join(HEADERS) + " |",
             "|---|---|" + "---:|" * len(HEADERS)]
    for row in rows:
        cells = [str(row["objects"]), *(cell(m, row[m]) for m in METRICS), f"{row['s/click']:.3f}"]
        lines.append(f"| {row['group']} | {row['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_markdown(records: list[dict], notes: list[str]) -> str:
    parts = ["# LIM-Net evaluation: simulated clicks", ""]
    parts += [f"- {n}" for n in notes if n]
    parts += ["", f"Dice@k: mean 3D Dice after k clicks. NoC@x: mean number of clicks to reach Dice x "
              f"({NOC_CAP} when not reached within {NOC_CAP} clicks). s/click: median wall time from a click "
              "to the method's complete 3D result.", "",
              "## Per source", "", markdown_table(summary_rows(records, "source"), "source"), "",
              "## Per structure (source:label)", "",
              markdown_table(summary_rows(records, "structure"), "structure"), ""]
    hits = [h for r in records for h in r.get("suspect_hits", [])]
    if hits:
        parts += ["## Where to look next", "",
                  f"The first suspect slice was among the five slices with the most wrong voxels in "
                  f"{100 * np.mean(hits):.0f} % of {len(hits)} rounds.", ""]
    return "\n".join(parts)


def mean_curves(records: list[dict]) -> dict[str, dict[str, np.ndarray]]:
    """{group: {method: mean Dice after 1..n clicks}} per source, and for ``ALL`` the mean of the source
    curves (the same weighting as the tables' "all sources" row)."""
    dices: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        dices[r["source"]][r["method"]].append(r["dice"])
    curves = {group: {m: np.mean(np.array(d), axis=0) for m, d in sorted(per.items())}
              for group, per in dices.items()}
    if len(curves) > 1:
        methods = sorted({m for per in curves.values() for m in per})
        curves[ALL] = {m: np.mean([per[m] for per in curves.values() if m in per], axis=0) for m in methods}
    return curves


def plot_dice_curves(records: list[dict], path) -> Path:
    """One panel per source (and one averaging them); one curve per method."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed (CI, servers)
    import matplotlib.pyplot as plt

    curves = mean_curves(records)
    groups = sorted(g for g in curves if g != ALL) + [g for g in curves if g == ALL]
    cols = min(3, len(groups))
    rows = -(-len(groups) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, group in zip(axes.ravel(), groups, strict=False):
        for method, curve in curves[group].items():
            ax.plot(np.arange(1, len(curve) + 1), curve, marker="o", markersize=3, label=method)
        ax.set_title(group)
        ax.set_xlabel("clicks")
        ax.set_ylabel("mean Dice")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    for ax in axes.ravel()[len(groups):]:
        ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
