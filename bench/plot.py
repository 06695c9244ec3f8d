"""Draw the benchmark's per-test costs as an SVG bar chart (no dependencies).

    python bench/plot.py [bench/results/latest.json] [docs/_static/benchmark.svg]

One group of bars per kind of test, one bar per flavour, its length the
process CPU time per test in milliseconds, labelled with the ratio to Django's
sync TestCase and with the wall time.
"""

from __future__ import annotations

import json
import sys
from html import escape
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COLOURS = {
    "TestCase (sync)": "#7f7f7f",
    "TestCase (async def)": "#d62728",
    "IsolatedAsyncioTestCase": "#ff7f0e",
    "AsyncTestCase, loop per test": "#1f77b4",
    "AsyncTestCase, loop per class": "#2ca02c",
    "AsyncTestCase, one loop for the run": "#9467bd",
    "AsyncTestCase, sync test": "#8c564b",
    "AsyncTestCase, loop per class, cpu_affinity off": "#17becf",
}
KINDS = {
    "trivial": "trivial test",
    "orm": "ORM test",
    "testdata": "setUpTestData + read",
    "client": "AsyncClient GET",
}
LABEL_WIDTH, BAR_AREA, BAR, GAP, TOP = 300, 400, 16, 4, 40


def svg(results: dict) -> str:
    rows: list[str] = []
    y = TOP
    longest = max(
        cost["cpu"]
        for kind, costs in results["per_test"].items()
        if kind in KINDS
        for cost in costs.values()
    )
    for kind, title in KINDS.items():
        costs = results["per_test"].get(kind)
        if not costs:
            continue
        base = costs["TestCase (sync)"]["cpu"]
        rows.append(f'<text x="10" y="{y + 12}" font-weight="bold">{escape(title)}</text>')
        y += 20
        for flavour, cost in costs.items():
            width = max(1.0, BAR_AREA * cost["cpu"] / longest)
            colour = COLOURS.get(flavour, "#9467bd")
            label_x, value_x = LABEL_WIDTH - 8, LABEL_WIDTH + width + 6
            rows.append(
                f'<text x="{label_x}" y="{y + 12}" text-anchor="end">{escape(flavour)}</text>'
                f'<rect x="{LABEL_WIDTH}" y="{y}" width="{width:.1f}" height="{BAR}" '
                f'fill="{colour}"/><text x="{value_x:.1f}" y="{y + 12}">'
                f"{cost['cpu'] * 1000:.2f} ms ({cost['cpu'] / base:.2f}x), "
                f"wall {cost['wall'] * 1000:.2f} ms</text>"
            )
            y += BAR + GAP
        y += 12
    versions = results["versions"]
    caption = (
        f"Process CPU time per test, median of {results['rounds']} interleaved rounds, "
        f"{results['tests_per_class']} tests per class; djasynctest "
        f"{versions['djasynctest']}, Django {versions['django']}, Python {versions['python']}, "
        f"{versions['database']}"
    )
    width = LABEL_WIDTH + BAR_AREA + 230
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y + 10}" '
        f'font-family="sans-serif" font-size="12">'
        f'<rect width="100%" height="100%" fill="white"/>'
        f'<text x="10" y="20" font-size="13">{escape(caption)}</text>' + "".join(rows) + "</svg>\n"
    )


def main() -> None:
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "bench" / "results" / "latest.json"
    target = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "docs" / "_static" / "benchmark.svg"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(svg(json.loads(source.read_text())))
    print(f"SVG: {target}")


if __name__ == "__main__":
    main()
