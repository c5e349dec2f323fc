"""A check's results for people: a short table for the terminal, an HTML page with plots for MLflow."""
from __future__ import annotations

import base64
import html
import io

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from review_sentiment.monitoring.drift import Check, Window
from review_sentiment.monitoring.profile import ReferenceProfile, UnusableProfile, stored

# a degraded version outranks a suspect one: its retrain is still judged on the protected set; drift
# outranks an estimated drop, which is reported and never acted on by itself
SEVERITY = {"degraded": 5, "suspect-feedback": 4, "drift": 3, "estimated-drop": 2, "ok": 1, "insufficient-data": 0}
F1_HISTORY = ["estimated_f1", "estimated_f1_low", "estimated_f1_high", "realized_f1"]  # per check, for the plot


def overall(statuses: list[str]) -> str:
    """The worst status of the versions checked; no version at all is insufficient data."""
    return max(statuses, key=SEVERITY.__getitem__, default="insufficient-data")


def estimate_text(result: Check) -> str:
    """The label-free estimate and its interval; flagged when the inputs drifted, because it assumes the
    calibration still holds, which reviews unlike the training ones break (benchmarks: 0.23-0.29 too high
    on another domain)."""
    if result.estimate is None:
        return "n/a"
    e = result.estimate
    moved = any(f.drifted for f in result.findings if f.kind == "input")
    return f"{e.f1:.3f} [{e.low:.3f}, {e.high:.3f}]" + (" (inputs drifted: unreliable)" if moved else "")


def summary(checks: dict[str, Check]) -> str:
    lines = [f"{'version':<10} {'status':<18} {'predictions':>11} {'feedback':>8}  drifted"]
    for version, result in checks.items():
        drifted = ", ".join(f.measure for f in result.findings if f.drifted) or "-"
        lines.append(f"{version:<10} {result.status:<18} {result.predictions:>11} {result.feedback:>8}  {drifted}")
        lines.append(f"{'':<10} macro-F1 estimated without labels: {estimate_text(result)}")
        if result.note:
            lines.append(f"{'':<10} {result.note}")
    return "\n".join(lines)


def html_report(title: str, checks: dict[str, Check], profiles: dict[str, ReferenceProfile | UnusableProfile | None],
                windows: dict[str, Window], history: pd.DataFrame) -> str:
    """The check's findings per version, its distributions against the reference, and (`history`: one
    row per check, a `time` column and `F1_HISTORY`) macro-F1 estimated and realized across checks."""
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}td,th{padding:2px 8px;"
             "text-align:right}.drift{color:#b00;font-weight:bold}</style>", f"<h1>{html.escape(title)}</h1>"]
    for version, result in checks.items():
        parts.append(f"<h2>{html.escape(version)}: {result.status}</h2><p>{result.predictions} predictions, "
                     f"{result.feedback} trusted labels fed back; macro-F1 estimated without labels: "
                     f"{estimate_text(result)}. {html.escape(result.note)}</p>")
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
        if result.current is not None and isinstance(profile := profiles.get(version), ReferenceProfile):
            parts.append(f"<img alt='distributions' src='data:image/png;base64,"
                         f"{_png(_plots(profile, result, windows[version]))}'>")
    if history[F1_HISTORY[0]].notna().any() or history[F1_HISTORY[-1]].notna().any():
        parts.append(f"<h2>Macro-F1 across checks</h2><img alt='macro-F1 over time' "
                     f"src='data:image/png;base64,{_png(_f1_over_time(history))}'>")
    return "\n".join(parts)


def _png(figure: Figure) -> str:
    figure.tight_layout()
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=80)
    return base64.b64encode(png.getvalue()).decode()


def _f1_over_time(history: pd.DataFrame) -> Figure:
    """The estimate with its 95% interval, and the F1 on trusted feedback where there was a quorum."""
    figure = Figure(figsize=(9, 3.6))
    ax = figure.subplots()
    times = pd.to_datetime(history["time"])
    ax.fill_between(times, history["estimated_f1_low"], history["estimated_f1_high"], alpha=0.25,
                    label="estimate's 95% interval")
    ax.plot(times, history["estimated_f1"], marker="o", label="estimated from calibrated probabilities")
    ax.plot(times, history["realized_f1"], marker="s", linestyle="--", label="realized on trusted feedback")
    ax.set(xlabel="check (UTC)", ylabel="macro-F1", title="macro-F1 of the busiest version, per check")
    ax.legend(loc="lower left")
    figure.autofmt_xdate()
    return figure


def _plots(profile: ReferenceProfile, result: Check, window: Window) -> Figure:
    """Reference against now: length, out-of-vocabulary share, score."""
    figure = Figure(figsize=(13, 3.4))  # no pyplot: no global state, no screen needed
    axes = figure.subplots(1, 3)
    assert result.current is not None  # drawn only for a check that measured the window
    pairs = [("review length (characters)", profile.lengths, None, result.current.lengths),
             ("out-of-vocabulary share", profile.oov_shares, profile.weights, result.current.oov_shares),
             ("score", profile.scores, profile.weights, window.scores)]
    for ax, (name, reference, reference_rows, current) in zip(axes, pairs, strict=True):
        then = stored(reference)
        rows = np.ones(len(then)) if reference_rows is None else np.asarray(reference_rows, float)
        kept, now = ~np.isnan(then), np.asarray(current, float)
        then, rows, now = then[kept], rows[kept], now[~np.isnan(now)]
        bins = np.histogram_bin_edges(np.concatenate([then, now]), bins=30)
        ax.hist(then, bins=bins, weights=rows, density=True, alpha=0.5, label="reference")
        ax.hist(now, bins=bins, density=True, alpha=0.5, label="now")
        ax.set(xlabel=name, ylabel="share of reviews (density)", title=name)
    axes[0].legend()
    return figure
