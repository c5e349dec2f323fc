"""NannyML's CBPE estimate of macro-F1 per window; run by bench_monitoring_truth.py in NannyML's own venv.

    benchmarks/.nannyml-venv/bin/python benchmarks/nannyml_cbpe.py job.json   # prints a JSON list

job.json: {"reference": [probabilities, true labels, predicted labels], "windows": [[probabilities,
predicted labels], ...]}. NannyML's binary F1 is the positive class's; macro-F1 is its mean with the F1
of the flipped problem (negative as positive). `NoopCalibrator`: the probabilities are used as given,
already calibrated (by default CBPE may fit an isotonic map on the reference first).
"""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import nannyml as nml
import numpy as np
import pandas as pd
from nannyml.calibration import NoopCalibrator
from nannyml.chunk import Chunk, Chunker


class ByWindow(Chunker):
    """One chunk per window, in order."""

    def __init__(self) -> None:
        super().__init__(timestamp_column_name=None)

    def _split(self, data: pd.DataFrame) -> list[Chunk]:
        return [Chunk(key=str(key), data=part, start_index=int(part.index.min()), end_index=int(part.index.max()))
                for key, part in data.groupby("window", sort=True)]


def f1_of(reference: pd.DataFrame, analysis: pd.DataFrame) -> np.ndarray:
    estimator = nml.CBPE(y_pred_proba="p", y_pred="y_pred", y_true="y_true", problem_type="classification_binary",
                         metrics=["f1"], chunker=ByWindow(), calibrator=NoopCalibrator())
    estimator.fit(reference)
    result = estimator.estimate(analysis).filter(period="analysis").to_df()
    return result[("f1", "value")].to_numpy(float)


def main(path: str) -> None:
    job = json.loads(Path(path).read_text())
    p, y_true, y_pred = (np.asarray(v, float) for v in job["reference"])
    window_p = np.concatenate([np.asarray(w[0], float) for w in job["windows"]])
    window_pred = np.concatenate([np.asarray(w[1], float) for w in job["windows"]])
    window = np.concatenate([np.full(len(w[0]), k) for k, w in enumerate(job["windows"])])
    sides = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The resulting number of chunks is too low")
        for flip in (False, True):
            turn = (lambda v: 1 - v) if flip else (lambda v: v)
            reference = pd.DataFrame({"p": turn(p), "y_true": turn(y_true).astype(int),
                                      "y_pred": turn(y_pred).astype(int), "window": -1})
            analysis = pd.DataFrame({"p": turn(window_p), "y_pred": turn(window_pred).astype(int), "window": window})
            sides.append(f1_of(reference, analysis))
    print(json.dumps(((sides[0] + sides[1]) / 2).tolist()))


if __name__ == "__main__":
    main(sys.argv[1])
