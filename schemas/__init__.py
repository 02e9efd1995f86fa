"""The table schemas as package data (imported as curate._schemas; see curate/bundled.py)."""
