"""A registered model as another team meets it: a fresh Python process that imports no project code,
every input shape pyfunc and the REST payload formats allow."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.helpers import Store


def test_champion_predicts_raw_text_in_a_fresh_process(tuned: Store, tmp_path) -> None:
    """The model brings its cleaning code and stopword list: the process imports the model's own copy of
    text_cleaning, never the project's, and nothing of the package (installed here, editable)."""
    script = """
import json, sys, mlflow, numpy as np, pandas as pd
from mlflow.models import validate_serving_input
uri = "models:/FlipkartSentimentModel@champion"
model = mlflow.pyfunc.load_model(uri)
texts = ["Worst product ever, not good at all 😡", "Excellent laptop, loved it 👍", "ok <b>fine</b>"]
import text_cleaning
payloads = [{"dataframe_split": {"columns": ["review"], "data": [[t] for t in texts]}},
            {"dataframe_records": [{"review": t} for t in texts]}, {"inputs": texts}, {"instances": texts}]
out = {
    "list": model.predict(texts).tolist(),
    "frame": model.predict(pd.DataFrame({"review": texts})).tolist(),
    "series": model.predict(pd.Series(texts)).tolist(),
    "array": model.predict(np.array(texts)).tolist(),
    "dict": model.predict({"review": np.array(texts)}).tolist(),
    "rest": [validate_serving_input(uri, json.dumps(p)).tolist() for p in payloads],
    "one": model.predict(["not good"]).tolist(),
    "code_from": text_cleaning.__file__,
    "package_imported": sorted(m for m in sys.modules if m.startswith("review_sentiment")),
}
print(json.dumps(out))
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["MLFLOW_TRACKING_URI"] = tuned.uri
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                          env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["list"] == out["frame"] == out["series"] == out["array"] == out["dict"]
    assert out["rest"] == [out["list"]] * 4 and len(out["list"]) == 3
    assert out["list"][:2] == [0, 1] and out["one"] == [0]
    assert str(tuned.path) in out["code_from"]  # the model's own copy, not the project's
    assert out["package_imported"] == []  # the model needs nothing of the package (installed here, editable)
