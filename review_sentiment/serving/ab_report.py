"""The champion/challenger report, read from the prediction log.

Per variant: requests, reviews, positive rate, request latency, and macro-F1 where true labels
were fed back. Agreement: both variants' latest logged versions re-label every logged review, so
it is measured on the same texts even though each request went to only one of them.
"""
from __future__ import annotations

from dataclasses import dataclass

import mlflow
import pandas as pd

from review_sentiment.constants import CHALLENGER, CHAMPION
from review_sentiment.modeling.metrics import MIN_LABELLED, judgeable, macro_f1
from review_sentiment.tracking.model_loading import load_pipeline


@dataclass(frozen=True)
class VariantStats:
    variant: str
    versions: str  # the model versions that answered for the variant, e.g. "v3, v4"
    requests: int
    reviews: int
    positive_rate: float
    p50_ms: float
    p99_ms: float
    feedback: int
    macro_f1: float | None


@dataclass(frozen=True)
class Agreement:
    rate: float | None
    reviews: int
    note: str


def variant_stats(log: pd.DataFrame) -> list[VariantStats]:
    stats = []
    for variant, rows in log.groupby("variant", sort=False):
        latency = rows.groupby("request_id")["latency_ms"].first()
        judged = rows[rows["true_label"].notna()]
        stats.append(VariantStats(
            variant=str(variant),
            versions=", ".join(f"v{v}" for v in sorted(rows["model_version"].unique(), key=int)),
            requests=len(latency), reviews=len(rows), positive_rate=float(rows["label"].mean()),
            p50_ms=float(latency.quantile(0.5)), p99_ms=float(latency.quantile(0.99)),
            feedback=len(judged),
            macro_f1=macro_f1(judged["true_label"].astype(int), judged["label"])
            if judgeable(judged["true_label"].astype(int)) else None,
        ))
    return sorted(stats, key=lambda s: s.variant != CHAMPION)


def agreement(log: pd.DataFrame) -> Agreement:
    """Share of logged reviews on which the latest champion and challenger versions agree."""
    latest = {variant: rows.sort_values("time").iloc[-1] for variant, rows in log.groupby("variant")}
    if not {CHAMPION, CHALLENGER} <= latest.keys():
        return Agreement(None, 0, "needs traffic on both variants")
    texts = log["review"].drop_duplicates().tolist()
    labels = {}
    for variant, row in latest.items():
        uri = f"models:/{row.model_name}/{row.model_version}"
        try:
            version = mlflow.MlflowClient().get_model_version(row.model_name, row.model_version)
            labels[variant] = load_pipeline(version).predict(texts)
        except Exception as err:  # noqa: BLE001 — a report without this line is still a report
            return Agreement(None, 0, f"could not load {uri} from {mlflow.get_tracking_uri()}: {err}")
    rate = float((labels[CHAMPION] == labels[CHALLENGER]).mean())
    return Agreement(rate, len(texts), f"champion v{latest[CHAMPION].model_version} vs "
                                       f"challenger v{latest[CHALLENGER].model_version}")


def format_report(log: pd.DataFrame, source: str) -> str:
    if log.empty:
        return f"{source}: no predictions logged yet"
    lines = [f"A/B report: {source} — {len(log)} predictions, {log['time'].min()} to {log['time'].max()}", ""]
    header = f"{'variant':<11} {'served by':<9} {'requests':>8} {'reviews':>8} {'positive':>8} " \
             f"{'p50 ms':>7} {'p99 ms':>7} {'feedback':>8} {'macro-F1':>8}"
    lines += [header, "-" * len(header)]
    variants = variant_stats(log)
    for s in variants:
        f1 = f"{s.macro_f1:.4f}" if s.macro_f1 is not None else "n/a"
        lines.append(f"{s.variant:<11} {s.versions:<9} {s.requests:>8} {s.reviews:>8} {s.positive_rate:>8.1%} "
                     f"{s.p50_ms:>7.2f} {s.p99_ms:>7.2f} {s.feedback:>8} {f1:>8}")
    agreed = agreement(log)
    if any(s.macro_f1 is None for s in variants):
        lines.append(f"macro-F1 n/a: fewer than {MIN_LABELLED} fed-back labels, or one label only")
    lines.append("")
    if agreed.rate is None:
        lines.append(f"Agreement between variants: n/a ({agreed.note})")
    else:
        lines.append(f"Agreement between variants: {agreed.rate:.1%} of {agreed.reviews} logged reviews "
                     f"({agreed.note})")
    return "\n".join(lines)
