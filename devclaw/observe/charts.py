"""Charts as inline SVG, drawn on the server by pygal: nothing for the browser to load or run.

pygal's default adds ``<script>`` tags pointing at a CDN for its tooltips; ``js=[]`` turns that off, so
a page works offline and fetches nothing at run time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pygal
from pygal.style import Style

_STYLE = Style(
    background="transparent",
    plot_background="transparent",
    foreground="#333",
    foreground_strong="#111",
    foreground_subtle="#999",
    colors=("#428bca", "#d9534f", "#f39c12", "#5cb85c", "#9b59b6", "#5bc0de", "#95a5a6"),
    font_family="system-ui, sans-serif",
)


def _config(title: str) -> dict[str, Any]:
    return {
        "title": title,
        "js": [],
        "style": _STYLE,
        "disable_xml_declaration": True,
        "height": 260,
        "width": 720,
        "legend_at_bottom": True,
        "x_label_rotation": 30,
        "show_minor_x_labels": True,
        "truncate_legend": -1,
    }


def bars(title: str, labels: Sequence[str], series: dict[str, Sequence[float | None]], *, stacked: bool = False) -> str:
    chart = (pygal.StackedBar if stacked else pygal.Bar)(**_config(title))
    chart.x_labels = list(labels)
    for name, values in series.items():
        chart.add(name, list(values))
    return str(chart.render(is_unicode=True))


def line(title: str, labels: Sequence[str], series: dict[str, Sequence[float | None]]) -> str:
    chart = pygal.Line(**_config(title), allow_interruptions=True)
    chart.x_labels = list(labels)
    for name, values in series.items():
        chart.add(name, list(values))
    return str(chart.render(is_unicode=True))


def pie(title: str, parts: dict[str, float]) -> str:
    chart = pygal.Pie(**{**_config(title), "inner_radius": 0.45})
    for name, value in parts.items():
        chart.add(name, value)
    return str(chart.render(is_unicode=True))
