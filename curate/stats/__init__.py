"""DuckDB over dataset folders: the `samples` view, read-only queries and summary statistics."""
