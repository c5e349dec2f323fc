"""Model tests: behaviour any registered sentiment model must show; `--model-uri` picks the model."""
