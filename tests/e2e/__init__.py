"""End-to-end tests: real server processes and scheduled runs, as a user meets them (marked e2e)."""
