"""Packaging hook: the wheel carries schemas/ and pipelines/ as the packages curate._schemas and curate._pipelines.

Everything else is declared in pyproject.toml. This file exists only because pyproject.toml cannot list
the discovered curate* packages and two mapped ones together; the mapping keeps the repository layout
(schemas/ and pipelines/ at the top) while `pip install -e .` and the built wheel both import them.
"""

from setuptools import find_packages, setup

BUNDLED = {"curate._schemas": "schemas", "curate._pipelines": "pipelines"}

setup(packages=find_packages(include=["curate", "curate.*"]) + list(BUNDLED), package_dir=BUNDLED)
