"""The bundled sample: written by our generator, big and varied enough for the default run."""
import subprocess
import sys
from pathlib import Path

import pandas as pd

from review_sentiment.data.reviews import load_reviews, split_reviews
from tests.helpers import PROJECT_DIR, SAMPLE


def test_generator_reproduces_the_bundled_file(tmp_path: Path) -> None:
    out = tmp_path / "s.csv"
    subprocess.run([sys.executable, str(PROJECT_DIR / "data" / "make_sample_reviews.py"), "--out", str(out)],
                   check=True, capture_output=True)
    assert out.read_bytes() == SAMPLE.read_bytes()


def test_size_balance_and_layout() -> None:
    raw = pd.read_csv(SAMPLE)
    assert {"Review text", "Ratings", "Reviewer Name", "Review Title"} <= set(raw.columns)
    reviews = load_reviews(SAMPLE)
    assert len(reviews.label) >= 600
    assert 0.75 <= reviews.label.mean() <= 0.85
    assert reviews.dropped_missing > 0 and reviews.dropped_duplicates > 0
    split = split_reviews(reviews, 0.3, 5, 42)  # 5 folds with min_df up to 7 need room
    assert min((split.y_train == c).sum() for c in (0, 1)) >= 5 * 7


def test_real_world_noise_is_present() -> None:
    text = load_reviews(SAMPLE).text
    has = lambda pattern: int(text.str.contains(pattern, regex=True).sum())  # noqa: E731
    assert has(r"[\U0001F300-\U0001FAFF]") >= 50  # emoji
    assert has(r"https?://|www\.") >= 10
    assert has(r"<b>|<br>") >= 10
    assert has(r"(?i)not good at all|not worth") >= 30  # negated praise
    assert has(r"\d") >= 50
    assert has(r"(?i)\b(?:awsome|prodcut|batery|gud)\b") >= 20  # typos
    ratings3 = load_reviews(SAMPLE).rating.eq(3).sum()
    assert ratings3 >= 50  # mixed reviews
