"""Data: reading, validating, labelling and splitting review files; every user mistake is one line."""
