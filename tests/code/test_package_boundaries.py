"""The package's shape holds: importing it has no side effects, the cleaning module the models
carry stands alone, and the import contracts in pyproject.toml catch a stage importing across."""
from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

import text_cleaning
from review_sentiment.constants import PROJECT_DIR

PACKAGE = PROJECT_DIR / "review_sentiment"

IMPORT_EVERYTHING = """
import importlib, json, os, pkgutil, sys
libraries = json.loads(sys.argv[1])
for name in libraries:
    importlib.import_module(name)
before = dict(os.environ)  # what the libraries themselves set (MLflow's telemetry id, ...) is theirs
import review_sentiment
ours = [m.name for m in pkgutil.walk_packages(review_sentiment.__path__, "review_sentiment.")]
for name in ours + ["text_cleaning", "sentiment_mlflow_optuna", "ml_orchestration_flipkart", "serve_api"]:
    importlib.import_module(name)
changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))
print(json.dumps({"modules": len(ours), "changed": changed}))
"""


@pytest.mark.e2e  # a process importing every entry script and all they import (~8 s)
def test_importing_any_module_changes_no_environment_variable() -> None:
    """Every module of the package and every entry script, imported in a fresh process."""
    graph = grimp.build_graph("review_sentiment", include_external_packages=True)
    libraries = sorted(m for m in graph.modules if not m.startswith("review_sentiment") and m != "text_cleaning")
    proc = subprocess.run([sys.executable, "-c", IMPORT_EVERYTHING, json.dumps(libraries)], cwd=PROJECT_DIR,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["modules"] >= 30 and result["changed"] == []


HELP_ONLY = """
import json, runpy, sys
sys.argv = [sys.argv[1], "--help"]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit:
    pass
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""
PIPELINE_LIBRARIES = {"sklearn", "mlflow", "optuna", "prefect", "fastapi", "uvicorn", "pandas", "scipy", "nltk",
                      "skops"}


@pytest.mark.parametrize("script", ["sentiment_mlflow_optuna.py", "ml_orchestration_flipkart.py", "serve_api.py",
                                    "stack.py"])
def test_help_is_read_before_the_pipeline_is_imported(script: str) -> None:
    """`--help` (and a mistyped flag) answer at once: the libraries that take seconds to import come after
    the flags are read (benchmarks/bench_startup.py times it)."""
    done = subprocess.run([sys.executable, "-c", HELP_ONLY, script], cwd=PROJECT_DIR, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and "--help" in done.stdout, done.stderr[-2000:]
    imported = set(json.loads(done.stdout.strip().splitlines()[-1]))
    assert imported.isdisjoint(PIPELINE_LIBRARIES), sorted(imported & PIPELINE_LIBRARIES)


LATER_ONLY = {"psycopg", "emoji", "skops", "matplotlib", "git"}  # a run needs them after its first trial, if ever


@pytest.mark.e2e  # a fresh interpreter importing the whole pipeline: ~4 s, too slow for the fast loop
def test_the_pipeline_imports_nothing_only_later_steps_need() -> None:
    """What a tuning run imports before its first trial (benchmarks/bench_startup.py times it) leaves out
    what only PostgreSQL (psycopg), a rare text (emoji) or the first release (skops, matplotlib, GitPython)
    needs: each was seconds, or a tenth of one, on every run's way to its first trial."""
    done = subprocess.run([sys.executable, "-c", "import json, sys, review_sentiment.training.tuning_run; "
                           "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))"],
                          cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    imported = set(json.loads(done.stdout.strip().splitlines()[-1]))
    assert "sklearn" in imported and imported.isdisjoint(LATER_ONLY), sorted(imported & LATER_ONLY)


def test_the_cleaning_module_imports_nothing_of_the_project() -> None:
    """Every logged model carries text_cleaning.py alone (with its stopword list): it cannot reach
    the package from inside a model."""
    tree = ast.parse(Path(text_cleaning.__file__).read_text(encoding="utf-8"))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported.isdisjoint({"review_sentiment", "sentiment_mlflow_optuna", "ml_orchestration_flipkart",
                                "serve_api"}), imported


@pytest.mark.parametrize("module, added_import, broken", [
    (None, None, None),
    ("serving/app.py", "import review_sentiment.training.study", "Serving never imports training or orchestration"),
    ("serving/ab_report.py", "import review_sentiment.orchestration.retrain",
     "Serving never imports training or orchestration"),
    ("data/reviews.py", "import review_sentiment.modeling.metrics", "Stages are layered"),
    ("tracking/promotion.py", "import review_sentiment.training.release", "Stages are layered"),
    ("modeling/linear.py", "import serve_api", "Nothing in the package imports an entry script"),
], ids=["as it is", "serving->training", "serving->orchestration", "data->modeling", "tracking->training",
        "package->entry script"])
def test_the_import_contracts_catch_a_stage_importing_across(tmp_path: Path, module: str | None,
                                                             added_import: str | None, broken: str | None) -> None:
    """lint-imports on a copy of the package with one import added where the rules forbid it."""
    shutil.copytree(PACKAGE, tmp_path / "review_sentiment", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROJECT_DIR / "pyproject.toml", tmp_path)
    if module:
        with (tmp_path / "review_sentiment" / module).open("a", encoding="utf-8") as source:
            source.write(f"\n{added_import}  # added by the test\n")
    lint_imports = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint_imports), "--no-cache"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={"PYTHONPATH": str(tmp_path), "PATH": str(lint_imports.parent)})
    if broken is None:
        assert proc.returncode == 0 and "0 broken" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
    else:
        assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert f"{broken}" in proc.stdout and "BROKEN" in proc.stdout and added_import.split()[-1] in proc.stdout
