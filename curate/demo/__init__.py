"""The embedded demo: a synthetic corpus of moving shapes, served from loopback, curated end to end."""
