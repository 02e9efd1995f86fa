"""The bundled recipes as package data (imported as curate._pipelines; see curate/bundled.py)."""
