"""`serve_api.py`'s flags and its one-line errors, without starting a server (that is tests/e2e)."""
from __future__ import annotations

from pathlib import Path

import pytest

import serve_api


@pytest.mark.parametrize("args, message", [
    (["--model-uri", "s3://bucket/model"], "expected models:/NAME@ALIAS or models:/NAME/VERSION"),
    (["--prediction-log", "/no/such/dir/p.db"], "cannot use as the prediction log"),
    (["report", "--prediction-log", "missing.db"], "no prediction log here"),
])
def test_cli_mistakes_get_one_line_and_status_2(args: list[str], message: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert serve_api.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_it_listens_on_loopback_unless_told_otherwise() -> None:
    args = serve_api.parse_args([])
    assert (args.host, args.port, args.model_uri) == ("127.0.0.1", 8000, "models:/FlipkartSentimentModel@champion")
