"""Code tests: each unit of the package against real stores, studies and flows."""
