"""A check's results for people: a short table for the terminal, an HTML page with plots for MLflow."""
from __future__ import annotations

import base64
import html
import io

import numpy as np
from matplotlib.figure import Figure

from review_sentiment.monitoring.drift import Check, Window

# a degraded version outranks a suspect one: its retrain is still judged on the protected set
SEVERITY = {"degraded": 4, "suspect-feedback": 3, "drift": 2, "ok": 1, "insufficient-data": 0}


def overall(statuses: list[str]) -> str:
    """The worst status of the versions checked; no version at all is insufficient data."""
    return max(statuses, key=SEVERITY.__getitem__, default="insufficient-data")


def summary(checks: dict[str, Check]) -> str:
    lines = [f"{'version':<10} {'status':<18} {'predictions':>11} {'feedback':>8}  drifted"]
    for version, result in checks.items():
        drifted = ", ".join(f.measure for f in result.findings if f.drifted) or result.note or "-"
        lines.append(f"{version:<10} {result.status:<18} {result.predictions:>11} {result.feedback:>8}  {drifted}")
    return "\n".join(lines)


def html_report(title: str, checks: dict[str, Check], profiles: dict[str, dict | None],
                windows: dict[str, Window]) -> str:
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}td,th{padding:2px 8px;"
             "text-align:right}.drift{color:#b00;font-weight:bold}</style>", f"<h1>{html.escape(title)}</h1>"]
    for version, result in checks.items():
        parts.append(f"<h2>{html.escape(version)}: {result.status}</h2><p>{result.predictions} predictions, "
                     f"{result.feedback} with feedback. {html.escape(result.note)}</p>")
        if result.findings:
            parts.append("<table><tr><th>kind</th><th>measure</th><th>reference</th><th>now</th>"
                         "<th>statistic</th><th>p</th></tr>")
            for f in result.findings:
                p = "" if f.p_value is None else f"{f.p_value:.3g}"
                parts.append(f"<tr class='{'drift' if f.drifted else ''}'><td>{f.kind}</td><td>{f.measure}</td>"
                             f"<td>{f.reference:.3f}</td><td>{f.current:.3f}</td><td>{f.statistic:.3f}</td>"
                             f"<td>{p}</td></tr>")
            parts.append("</table>")
        if result.new_terms:
            terms = ", ".join(f"{html.escape(t)} ({n})" for t, n in result.new_terms)
            parts.append(f"<p>Most frequent words outside the model's vocabulary: {terms}</p>")
        if result.current is not None and profiles.get(version):
            parts.append(f"<img alt='distributions' src='data:image/png;base64,"
                         f"{_plots(profiles[version], result, windows[version])}'>")
    return "\n".join(parts)


def _plots(profile: dict, result: Check, window: Window) -> str:
    """Reference against now: length, out-of-vocabulary share, score; one PNG, base64."""
    figure = Figure(figsize=(13, 3.4))  # no pyplot: no global state, no screen needed
    axes = figure.subplots(1, 3)
    pairs = [("review length (characters)", profile["lengths"], result.current.lengths),
             ("out-of-vocabulary share", profile["oov_shares"], result.current.oov_shares),
             ("score", profile["scores"], window.scores)]
    for ax, (name, reference, current) in zip(axes, pairs, strict=True):
        current = np.asarray(current, float)
        current = current[~np.isnan(current)]
        bins = np.histogram_bin_edges(np.concatenate([reference, current]), bins=30)
        ax.hist(reference, bins=bins, density=True, alpha=0.5, label="reference")
        ax.hist(current, bins=bins, density=True, alpha=0.5, label="now")
        ax.set_title(name)
    axes[0].legend()
    figure.tight_layout()
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=80)
    return base64.b64encode(png.getvalue()).decode()
