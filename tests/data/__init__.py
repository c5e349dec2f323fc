"""Data tests: the bundled sample is what the defaults and the other tests assume."""
