"""The one path from a configuration to a version, for the tuning run and every retrain: fit on the
training reviews → evaluate on the lineage's held-out slice → log (model, reports, datasets, training
reviews, reference profile) → register with its record. A model identical to a registered one (same
training rows, family, parameters, seed and model code) is not fitted again: that version is reused.
"""
from __future__ import annotations

import functools
import hashlib
import json
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.data.pandas_dataset import PandasDataset
from mlflow.entities.model_registry import ModelVersion
from sklearn.metrics import brier_score_loss

import text_cleaning
from review_sentiment.data import reviews as reviews_module
from review_sentiment.data.reviews import ReviewDataError, Reviews, Split, traffic_like, training_frame
from review_sentiment.modeling import calibration, families, fast_scorer, fold_counts, linear, metrics
from review_sentiment.modeling.calibration import ARTIFACT as CALIBRATION_ARTIFACT
from review_sentiment.modeling.calibration import calibration_folds, fit_calibration, fold_count
from review_sentiment.modeling.families import build_pipeline
from review_sentiment.modeling.fold_counts import (
    CountedFolds,
    FoldCounts,
    count_whole,
    fit_tfidf,
    left_no_words,
)
from review_sentiment.modeling.linear import predict_features_with_scores
from review_sentiment.modeling.metrics import expected_calibration_error, macro_f1
from review_sentiment.monitoring import profile
from review_sentiment.monitoring.estimate import estimated_macro_f1
from review_sentiment.tracking import model_logging, publication
from review_sentiment.tracking.model_logging import (
    compact_for_saving,
    log_dataset,
    log_training_records,
    training_dataset,
)
from review_sentiment.tracking.promotion import FEEDBACK, PROTECTED, Evidence
from review_sentiment.tracking.publication import Publication, publish, published_now
from review_sentiment.tracking.records import Lineage, VersionRecord, run_id_of
from review_sentiment.tracking.registry import records_of, registered_from
from review_sentiment.tracking.reports import report_text, top_terms
from review_sentiment.training import study

# The code that decides what a fitted model is: cleaning, loading and labelling, the pipelines and their
# counts, the metric, its calibration (and the trials' fold decisions it takes) and reference profile, how
# a model is logged and published, and this path. A change to any of
# their files changes every fingerprint.
MODEL_CODE = (text_cleaning, reviews_module, families, fold_counts, fast_scorer, linear, metrics, calibration,
              profile, model_logging, publication, study, sys.modules[__name__])


@dataclass(frozen=True)
class TrainingData:
    """What a lineage's model is fitted and judged on."""

    reviews: Reviews  # the lineage file's reviews; fed-back texts count as traffic for the profile
    split: Split  # the training rows (fed-back ones included) / the lineage's held-out slice of the file
    lineage: Lineage
    reviews_digest: str  # of the lineage file's reviews
    clean: Callable[[Iterable[str]], list[str]]  # `clean_texts`, or a look-up of what it gave
    feedback: Split | None = None  # fed-back reviews: trained on (X_train) and held out to judge (X_test)
    folds: CountedFolds | None = None  # a tuning run's CV folds of split.X_train with the run's seed (the
    # calibration fits on them)
    calibration_fold_count: int = calibration.FOLDS  # else the calibration's folds: a retrain repeats its tuning's

    @functools.cached_property
    def clean_train(self) -> list[str]:
        """The training reviews cleaned: once for the refit's count and the calibration's folds."""
        return self.clean(self.split.X_train)

    @functools.cached_property
    def training_dataset(self) -> PandasDataset:
        """The training rows as the MLflow dataset a run logs (its digest hashes every row): made once."""
        fed = "" if self.feedback is None else f" + {len(self.feedback.y_train)} fed-back reviews"
        return training_dataset(training_frame(self.split), self.lineage.data + fed,
                                name=f"{Path(self.lineage.data).stem}-train{fed}")

    @functools.cached_property
    def held_out_dataset(self) -> PandasDataset:
        """The held-out slice as the MLflow dataset a run logs: made once."""
        held = pd.DataFrame({"review": self.split.X_test.to_numpy(dtype=object), "label": self.split.y_test})
        return training_dataset(held, self.lineage.data, name=PROTECTED)

    @functools.cached_property
    def counts(self) -> dict[int, FoldCounts]:
        """`fold_counts.count_whole` of the training and held-out reviews, made with the folds' where it was
        (the folds of these training reviews: checked by their numbers of rows)."""
        whole = None if self.folds is None else self.folds.whole
        if whole is not None:
            largest = whole[max(whole)]  # every size's matrices are this one's
            if (largest.train.shape[0], largest.valid.shape[0]) == (len(self.split.y_train), len(self.split.y_test)):
                return whole
        return count_whole(self.clean_train, self.clean(self.split.X_test))

    @functools.cached_property
    def traffic(self) -> list[str]:
        """The rows of the lineage's file that stand for its models' traffic (`traffic_like`): once per run."""
        usable = self.reviews.usable_text
        return usable.iloc[traffic_like(usable, self.lineage.held_out, self.lineage.seed)].tolist()

    @property
    def protected(self) -> Evidence:
        return Evidence.of(PROTECTED, self.split.X_test, self.split.y_test)

    @property
    def feedback_evidence(self) -> Evidence | None:
        if self.feedback is None:
            return None
        return Evidence.of(FEEDBACK, self.feedback.X_test, self.feedback.y_test)


@dataclass(frozen=True)
class Released:
    """A version holding the configuration's model, and how it got there."""

    version: ModelVersion
    record: VersionRecord
    reused: bool  # an identical model was registered before: nothing was fitted
    test_pred: np.ndarray | None  # on the held-out slice; None when reused
    train_f1: float
    fit_time: float


def fingerprint(family: str, params: dict[str, Any], seed: int, data: TrainingData) -> str:
    """Training rows + family + parameters + seed + model code + the calibration's folds (a tuning run's
    CV folds), and the lineage file its test F1 and profile come from: equal exactly when the version
    would be."""
    digest = hashlib.sha256(f"{data.training_dataset.digest} {data.reviews_digest}".encode())
    for module in MODEL_CODE:
        assert module.__file__ is not None  # modules imported from source files
        digest.update(Path(module.__file__).read_bytes())
    decisive = {"family": family, "params": params, "seed": seed,
                "calibration_folds": fold_count(data.split.y_train, data.folds, data.calibration_fold_count)}
    digest.update(json.dumps(decisive, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def identical_version(name: str, value: str) -> ModelVersion | None:
    """The earliest version of `name` whose model has fingerprint `value`."""
    same = [v for v, record in records_of(name) if record.fingerprint == value]
    return min(same, key=lambda v: int(v.version), default=None)


Publisher = Callable[[Publication], Callable[[], ModelVersion | None]]
"""Publishes a model (`publication.publish`), now or beside what the caller goes on with: gives what
returns its version once published, or None where it was not (then the caller publishes it itself)."""


def release(name: str, family: str, params: dict[str, Any], seed: int, data: TrainingData, source: str,
            cv_f1: float | None = None, tuned_decisions: np.ndarray | None = None) -> Released:
    """Inside the active run: the version holding this configuration's model, fitted and registered
    unless an identical one is registered already (then it is reused and the run says so).
    `tuned_decisions`: the out-of-fold decisions of the tuning trial of this configuration on `data.folds`,
    which its calibration then uses instead of fitting those folds' models again."""
    return release_by(published_now, name, family, params, seed, data, source, cv_f1, tuned_decisions)()


def release_by(publisher: Publisher, name: str, family: str, params: dict[str, Any], seed: int,
               data: TrainingData, source: str, cv_f1: float | None = None,
               tuned_decisions: np.ndarray | None = None) -> Callable[[], Released]:
    """`release`, with the fitted model published by `publisher`: returns once it is fitted, judged and
    logged (all but the publication), giving what returns the release once the version exists."""
    value = fingerprint(family, params, seed, data)
    if (same := identical_version(name, value)) is not None:
        mlflow.set_tag("reused_version", same.version)
        run = mlflow.MlflowClient().get_run(run_id_of(same)).data.metrics
        reused = Released(same, VersionRecord.of(same), True, None, run.get("train_f1", float("nan")),
                          run.get("fit_time", 0.0))
        return lambda: reused
    split = data.split
    pipeline = build_pipeline(family, params, seed)
    tfidf, model = pipeline.named_steps["tfidf"], pipeline.named_steps["model"]
    pipeline[0].fit(split.X_train)  # what pipeline.fit does first (cleaning keeps no state: counts are of its output)
    try:  # what the TF-IDF's fit on the cleaned training reviews does, from the run's one count of them;
        # then the classifier, and its calibration on folds (one of which can keep no word where all do)
        counts = data.counts[tfidf.ngram_range[1]]
        started = time.perf_counter()  # fit_time: this model's TF-IDF and classifier, not the count they share
        X_train, X_test = fit_tfidf(tfidf, counts)
        model.fit(X_train, split.y_train)
        fit_time = time.perf_counter() - started
        folds = calibration_folds(data.clean_train, split.y_train, seed, data.folds,
                                  data.calibration_fold_count)
        calibrator = fit_calibration(model, params, folds, split.y_train,
                                     tuned_decisions if folds is data.folds else None)
    except ValueError as err:  # a TF-IDF that keeps no word is the data's doing: one line, not a traceback
        if not left_no_words(err):
            raise
        raise ReviewDataError(f"{data.lineage.data}: after cleaning, no word is in at least {tfidf.min_df} and at "
                              f"most {tfidf.max_df:.0%} of the training reviews (or of a calibration fold's); "
                              f"nothing to learn from") from None
    compact_for_saving(pipeline)
    test_pred, _, test_probability = predict_features_with_scores(model, X_test, calibrator)
    assert test_probability is not None  # given a calibration, there are probabilities
    train_f1 = macro_f1(split.y_train, model.predict(X_train))
    del X_train, X_test
    test_f1 = macro_f1(split.y_test, test_pred)
    mlflow.log_metrics({"train_f1": train_f1, "test_f1": test_f1, "fit_time": fit_time,
                        "test_brier": brier_score_loss(split.y_test, test_probability),
                        "test_ece": expected_calibration_error(split.y_test, test_probability),
                        "test_estimated_f1": estimated_macro_f1(test_pred, test_probability).f1}
                       | {f"calibration_cv_brier_{m}": v for m, v in calibrator.cv_brier.items()}
                       | ({} if cv_f1 is None else {"cv_f1_macro": cv_f1}))
    mlflow.set_tag("calibration", calibrator.method)
    mlflow.log_dict(calibrator.to_dict(), CALIBRATION_ARTIFACT)
    log_dataset(data.training_dataset, "training")
    log_dataset(data.held_out_dataset, "evaluation")
    mlflow.log_text(report_text(split.y_test, test_pred), "classification_report.txt")
    mlflow.log_dict(top_terms(pipeline), "top_terms.json")
    log_training_records(pipeline, data.reviews, split, data.traffic, seed, data.clean)
    active = mlflow.active_run()
    assert active is not None  # release runs inside its caller's run
    record = VersionRecord(family=family, source=source, lineage=data.lineage,
                           data_digest=data.training_dataset.digest, reviews_digest=data.reviews_digest,
                           fingerprint=value, test_f1=test_f1, run_id=active.info.run_id, cv_f1=cv_f1,
                           feedback_rows=0 if data.feedback is None else len(data.feedback.y_train))
    to_publish = Publication(active.info.run_id, name, family, pipeline, split.X_train.iloc[:3].tolist(),
                              np.asarray(split.y_test), test_pred, test_probability, calibrator.method,
                              {k: str(v) for k, v in record.tags().items()})
    published = publisher(to_publish)

    @functools.cache  # the version is looked up, or published here, once
    def released() -> Released:
        if (version := published()) is None:  # the publisher process stopped, maybe once it registered it
            version = next(iter(registered_from(to_publish.run_id, name, fingerprint=value)), None)
            print(f"{family}: the model was not published beside the trials: "
                  f"{'registered before they stopped' if version else 'published here'}", flush=True)
            version = version or publish(to_publish)
        return Released(version, record, False, test_pred, train_f1, fit_time)

    return released
