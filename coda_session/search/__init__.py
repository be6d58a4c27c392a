"""Full-text search, decided in Python so that every backend finds the same messages.

The text analysis (a message's searchable text and its index terms), the query grammar,
the ranking of a candidate window and the snippets live here, below the repositories:
SQLite's FTS5 table and PostgreSQL's tsvector only store and look up the terms computed
here, and the memory backend and custom storage evaluate the same parsed query in Python.
"""
