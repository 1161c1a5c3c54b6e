"""Self-contained HTML report of ``otel-topics cluster``: an SVG map of the clusters (PCA of the
centroids to 2-D, circles sized by cluster size) and a table (name, size, keywords, examples).
No scripts, no external resources."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from otel_topics.cluster_cli import Outcome

_W, _H, _PAD = 900, 600, 60
_STYLE = (
    "body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;width:100%}"
    "td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}"
    "th{background:#f0f0f0}svg{border:1px solid #ddd;background:#fafafa}"
    "circle{fill:#4a7fc1;fill-opacity:.45;stroke:#1f4f8f}text{font-size:11px}"
)


def project_2d(centroids: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """PCA of the rows to 2-D (zeros where there is no variance)."""
    x = np.asarray(centroids, dtype=np.float64)
    out = np.zeros((x.shape[0], 2))
    if x.shape[0] < 2:
        return out
    xc = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    dims = min(2, vt.shape[0])
    out[:, :dims] = xc @ vt[:dims].T
    return out


def _scale(v: npt.NDArray[np.float64], lo: float, hi: float) -> npt.NDArray[np.float64]:
    span = float(v.max() - v.min()) if v.size else 0.0
    if span == 0.0:
        return np.full(v.shape, (lo + hi) / 2)
    out: npt.NDArray[np.float64] = lo + (v - v.min()) / span * (hi - lo)
    return out


def svg_map(names: list[str], sizes: list[int], centroids: npt.ArrayLike) -> str:
    """Inline SVG: one labelled circle per cluster at its centroid's 2-D PCA position."""
    xy = project_2d(centroids)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" role="img">']
    if names:
        xs = _scale(xy[:, 0], _PAD, _W - _PAD)
        ys = _scale(xy[:, 1], _PAD, _H - _PAD)
        biggest = max(max(sizes), 1)
        for name, size, x, y in zip(names, sizes, xs, ys, strict=True):
            r = 4 + 26 * (size / biggest) ** 0.5
            label = html.escape(name)
            parts.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r:.1f}"><title>{label} ({size})</title></circle>'
                f'<text x="{x:.1f}" y="{y + r + 11:.1f}" text-anchor="middle">{label}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def render_html(outcome: Outcome, title: str = "") -> str:
    """The whole report as one HTML document."""
    cs = outcome.clusters
    m = outcome.metrics
    head = html.escape(f"otel-topics cluster: {title}" if title else "otel-topics cluster")
    stats = ", ".join(f"{k}={v if not isinstance(v, float) else round(v, 4)}" for k, v in m.items())
    rows = "".join(
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><ul>{}</ul></td></tr>".format(
            html.escape(c.id),
            html.escape(c.name),
            c.size,
            html.escape(", ".join(c.keywords)),
            "".join(f"<li>{html.escape(e)}</li>" for e in c.examples),
        )
        for c in cs
    )
    centroids = np.asarray([c.centroid for c in cs]) if cs else np.zeros((0, 2))
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{head}</title>'
        f"<style>{_STYLE}</style></head><body><h1>{head}</h1>"
        f"<p>{len(outcome.texts)} texts. {html.escape(stats)}</p>"
        f"{svg_map([c.name for c in cs], [c.size for c in cs], centroids)}"
        "<h2>Clusters</h2><table><tr><th>id</th><th>name</th><th>size</th><th>keywords</th>"
        f"<th>examples</th></tr>{rows}</table></body></html>\n"
    )
