"""Prediction log, A/B assignment and the A/B report, without a server."""
from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from review_sentiment.constants import CHALLENGER, CHAMPION
from review_sentiment.monitoring.logged import read_log
from review_sentiment.serving.ab_report import format_report, variant_stats
from review_sentiment.serving.model_watcher import choose_variant
from review_sentiment.serving.prediction_log import Feedback, LoggedRequest, PredictionLog


def answered(request_id: str, variant: str, version: str, labels: list[int], latency: float,
             reviews: list[str] | None = None) -> LoggedRequest:
    return LoggedRequest(request_id, [f"{request_id}.{i}" for i in range(len(labels))],
                         "2026-11-26T06:00:00.000+00:00", variant, "FlipkartSentimentModel", version, None,
                         reviews or [f"review {request_id}.{i}" for i in range(len(labels))], labels,
                         [0.9 if y else 0.1 for y in labels], latency)


def filled_log(path: Path, feedback: list[tuple[str, int]] = (), written: list[int] | None = None) -> list[Feedback]:
    """A log of three requests (a: champion, two reviews; b: challenger; c: champion), then `feedback`
    sent in order; returns its outcomes (and appends to `written` the rows the log says it wrote)."""
    async def fill() -> list[Feedback]:
        log = PredictionLog(path)
        for request in (answered("a", CHAMPION, "3", [1, 0], 2.0), answered("b", CHALLENGER, "1", [1], 4.0),
                        answered("c", CHAMPION, "3", [1], 1.0)):
            await log.record(request)
        outcomes = [await log.feedback(pid, label, "t") for pid, label in feedback]
        await log.close()
        if written is not None:
            written.append(log.state.written_rows)
        return outcomes
    return asyncio.run(fill())


def test_the_first_true_label_stands(tmp_path: Path) -> None:
    written: list[int] = []
    outcomes = filled_log(tmp_path / "p.db", [("a.0", 1), ("a.1", 1), ("a.1", 1), ("a.1", 0), ("zz.9", 1)], written)
    # a.1: the model said 0, a mistake; then a client's retry; then a different label, never overwritten
    assert outcomes == [Feedback.STORED, Feedback.STORED, Feedback.SAME, Feedback.CONFLICT, Feedback.UNKNOWN]
    assert written == [4 + 2], "/health's written_rows counts rows on record: 4 predictions and 2 labels"
    frame = read_log(tmp_path / "p.db").set_index("id")
    assert len(frame) == 4
    assert (frame.loc["a.0", "true_label"], frame.loc["a.1", "true_label"]) == (1, 1)
    assert frame.loc[["b.0", "c.0"], "true_label"].isna().all()
    assert frame.loc["b.0", "review"] == "review b.0" and frame.loc["b.0", "variant"] == CHALLENGER


def test_variant_stats_count_requests_reviews_latency_and_f1(tmp_path: Path) -> None:
    filled_log(tmp_path / "p.db", [("a.0", 1), ("a.1", 1)])
    champion, challenger = variant_stats(read_log(tmp_path / "p.db"))
    assert (champion.variant, champion.versions, champion.requests, champion.reviews) == (CHAMPION, "v3", 2, 3)
    assert champion.positive_rate == pytest.approx(2 / 3)
    assert champion.p50_ms == pytest.approx(1.5) and champion.feedback == 2
    assert champion.macro_f1 is None  # two labels, one of them: a macro-F1 of them would mean nothing
    assert (challenger.requests, challenger.feedback, challenger.macro_f1) == (1, 0, None)
    assert "macro-F1 n/a: fewer than 30 fed-back labels, or one label only" in format_report(
        read_log(tmp_path / "p.db"), "p.db")


def test_the_report_gives_macro_f1_from_enough_labels_of_both_kinds(tmp_path: Path) -> None:
    async def fill() -> None:
        log = PredictionLog(tmp_path / "p.db")
        said = [1] * 20 + [0] * 20
        await log.record(answered("r", CHAMPION, "3", said, 1.0))
        for i, label in enumerate([1] * 20 + [1] * 10 + [0] * 10):  # the model missed 10 positives
            await log.feedback(f"r.{i}", label, "t")
        await log.close()
    asyncio.run(fill())
    (champion,) = variant_stats(read_log(tmp_path / "p.db"))
    assert champion.macro_f1 == pytest.approx((40 / 50 + 20 / 30) / 2)  # F1 positive 0.8, negative 0.667


def test_report_prints_a_row_per_variant(tmp_path: Path) -> None:
    filled_log(tmp_path / "p.db")
    frame = read_log(tmp_path / "p.db")
    text = format_report(frame[frame["variant"] == CHAMPION], "predictions.db")
    rows = [line.split()[:2] for line in text.splitlines() if line.startswith(("champion ", "challenger "))]
    assert rows == [[CHAMPION, "v3"]]  # the version that answered, not a count of versions
    assert "served by" in text.splitlines()[2]
    assert "Agreement between variants: n/a (needs traffic on both variants)" in text
    assert format_report(frame.iloc[:0], "x.db") == "x.db: no predictions logged yet"


def test_read_log_names_a_missing_or_foreign_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing.db: no prediction log here"):
        read_log(tmp_path / "nothing.db")
    (tmp_path / "notes.db").write_text("not sqlite")
    with pytest.raises(ValueError, match="notes.db: not a prediction log .file is not a database"):
        read_log(tmp_path / "notes.db")


def test_a_caller_keeps_its_variant_and_shares_follow_the_setting() -> None:
    callers = [f"caller-{i}" for i in range(4000)]
    first = [choose_variant(c, 0.1) for c in callers]
    assert first == [choose_variant(c, 0.1) for c in callers]
    assert first.count(CHALLENGER) / len(callers) == pytest.approx(0.1, abs=0.015)
    assert {choose_variant(c, 0.0) for c in callers} == {CHAMPION}
    assert {choose_variant(c, 1.0) for c in callers} == {CHALLENGER}
    # raising the share only moves callers towards the challenger, never back
    assert all(choose_variant(c, 0.2) == CHALLENGER for c, v in zip(callers, first, strict=True) if v == CHALLENGER)


def test_anonymous_requests_are_drawn_at_the_share() -> None:
    """Without a caller id each request is a fresh draw: seeded here, so the check is exact."""
    def draws(seed: int) -> list[str]:
        draw = random.Random(seed).random
        return [choose_variant(None, 0.3, draw) for _ in range(4000)]

    variants = draws(11)
    assert variants == draws(11) and variants != draws(12)
    assert variants.count(CHALLENGER) / len(variants) == pytest.approx(0.3, abs=0.02)
    assert {choose_variant(None, 0.0, lambda: 0.0), choose_variant(None, 1.0, lambda: 0.999)} == {CHAMPION, CHALLENGER}
