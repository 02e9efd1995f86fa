"""A blind A/B study of generated videos: a local web app that collects votes, and the results table.

`serve(gen_dirs, port, host, votes)` runs the app; `results(votes_path)` reads the vote log.
"""

from curate.eval.study.app import serve
from curate.eval.study.results import results

__all__ = ["serve", "results"]
