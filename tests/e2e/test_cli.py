"""The orchestration CLI as a user's shell meets it: a process, its exit status, its whole output."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers import PROJECT_DIR, nothing_was_written


def test_scoring_into_its_own_input_is_refused_by_the_real_cli(reviews_to_score: Path) -> None:
    done = subprocess.run([sys.executable, str(PROJECT_DIR / "ml_orchestration_flipkart.py"), "score",
                           "--input", str(reviews_to_score), "--output", str(reviews_to_score)],
                          cwd=reviews_to_score.parent, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stdout == "" and done.stderr == (f"error: {reviews_to_score}: --output is the input file; "
                                                 f"write the predictions elsewhere\n")
    assert nothing_was_written(reviews_to_score.parent, reviews_to_score)
