"""The test suite: code, data, model (behavioural) and e2e tests; see docs/testing.md."""
