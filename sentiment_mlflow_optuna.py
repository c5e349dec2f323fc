"""Tune TF-IDF + Logistic Regression / Naive Bayes / Linear SVM sentiment models with Optuna,
track every trial in MLflow, register each family's best model and promote the champion.

    python sentiment_mlflow_optuna.py                     # the bundled sample data
    python sentiment_mlflow_optuna.py --data reviews.csv --text-col Review --rating-col Rating
    python sentiment_mlflow_optuna.py --workers 2         # two processes share each family's study
    python sentiment_mlflow_optuna.py --join --storage URL  # on another machine: help a run started elsewhere
    mlflow ui                                             # then open http://127.0.0.1:5000

Studies live in an Optuna storage (--storage, $OPTUNA_STORAGE, else optuna.journal next to an SQLite mlflow.db):
rerunning a command that was killed resumes it; rerunning a finished one tunes afresh.
"""
# The run itself (load → clean → split → tune → evaluate → log → register → promote) reads top to
# bottom in review_sentiment/training/tuning_run.py; this script only turns flags into its settings.
from __future__ import annotations

import argparse
import importlib
import os
from pathlib import Path

from review_sentiment import cli
from review_sentiment.constants import (
    DEFAULT_RATING_COL,
    DEFAULT_TEXT_COL,
    FAMILY_NAMES,
    MODEL_NAME,
    SAMPLE_DATA,
    TUNING_EXPERIMENT,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SAMPLE_DATA, help="review CSV (.tsv: tab-separated)")
    parser.add_argument("--text-col", default=DEFAULT_TEXT_COL, help="review text column")
    parser.add_argument("--rating-col", default=DEFAULT_RATING_COL, help="1–5 star rating column")
    parser.add_argument("--models", nargs="+", choices=FAMILY_NAMES, default=list(FAMILY_NAMES),
                        metavar="FAMILY", help=f"families to tune: {' '.join(FAMILY_NAMES)}")
    parser.add_argument("--trials", type=cli.at_least(1), default=20, help="Optuna trials per family")
    parser.add_argument("--folds", type=cli.at_least(2), default=None,
                        help="stratified CV folds (default: 5, or 3 for a file of more than 500,000 usable reviews)")
    parser.add_argument("--test-size", type=cli.fraction, default=0.3, help="held-out test share")
    parser.add_argument("--seed", type=int, default=42, help="fixes split, folds, sampler and models")
    parser.add_argument("--n-jobs", type=cli.at_least(-1), default=0,
                        help="processes scoring a trial's CV folds (default 0: none for a file of up to 20,000 usable "
                             "reviews, where a trial scores them faster itself; else this machine's cores shared "
                             "among its --workers; -1: all cores); results do not depend on it")
    parser.add_argument("--experiment", default=TUNING_EXPERIMENT, help="MLflow experiment name")
    parser.add_argument("--registered-model", default=MODEL_NAME, help="registry model name")
    parser.add_argument("--storage", type=cli.study_storage, default=os.environ.get("OPTUNA_STORAGE"),
                        help="Optuna storage: FILE.journal, sqlite:///FILE or postgresql://user:pw@host/optuna "
                             "(default: $OPTUNA_STORAGE, else optuna.journal next to an SQLite tracking store)")
    parser.add_argument("--workers", type=cli.at_least(1), default=1,
                        help="worker processes sharing each family's study (1: exactly reproducible)")
    parser.add_argument("--join", action="store_true",
                        help="only run trials of the same command started elsewhere (same data, flags, storage)")
    parser.add_argument("--worker-name", type=cli.tag_value, help="this worker's name on progress lines and child runs "
                                               "(default host:pid)")
    parser.add_argument("--allow-new-data", action="store_true",
                        help="let the tuned model compete with a champion trained on another data file")
    parser.add_argument("--unlocked-promotion", action="store_true",
                        help="move the champion alias even where no lock serialises alias moves (a tracking "
                             "server without REVIEW_SENTIMENT_LOCK_URL): concurrent promotions may then race")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    cli.configure()
    args = parse_args(argv)
    # The pipeline (sklearn, MLflow, Optuna: ~3 s of imports) is imported once the flags are read and the
    # reviews loaded, so that --help, a mistyped flag and an unreadable file answer at once. The writer, a
    # process writing the trials' child runs, starts first: its imports and the store it makes overlap ours.
    from review_sentiment.processes import collector_paused, own_temporary_folder
    from review_sentiment.tracking.trial_writer import trial_writer
    try:
        with own_temporary_folder(), trial_writer(publishes=not args.join) as writer:
            with collector_paused():  # the load and the imports make few cycles to collect: ~0.5 s sooner
                from review_sentiment.data.reviews import ReviewDataError, load_reviews
                try:
                    reviews = load_reviews(args.data, args.text_col, args.rating_col)
                except ReviewDataError as err:
                    return cli.user_error(err)
                # SciPy's special functions before MLflow and sklearn: skops, imported by the publisher this command
                # forks, names each of them by scanning the modules loaded before it, in import order
                importlib.import_module("scipy.special")
                from review_sentiment.tracking.alias_lock import NoAliasLock
                from review_sentiment.training.attempt import RunConflict
                from review_sentiment.training.journal import JournalLost
                from review_sentiment.training.tuning_run import TuningSettings, run_tuning
            try:
                run_tuning(TuningSettings(**vars(args)), reviews, writer)
            except (ReviewDataError, RunConflict, NoAliasLock, JournalLost) as err:
                return cli.user_error(err)
    except KeyboardInterrupt:  # a failed run has taken back what it wrote by then: a line, not a traceback
        return cli.interrupted()
    return 0


if __name__ == "__main__":
    cli.end_now(main())  # on return, everything is written and closed (an exception is reported as usual)
