"""Full-text search, decided in Python so that every backend finds the same messages.

The text analysis (a message's searchable text and its index terms), the query grammar,
the ranking of a candidate window and the snippets live here, below the repositories:
SQLite's FTS5 table and PostgreSQL's tsvector only store and look up the terms computed
here, and the memory backend and custom storage evaluate the same parsed query in Python.

- :mod:`.analysis`: ``message_text``/``record_text`` (what is searchable), ``terms`` (the
  index terms; the rules are in its docstring), ``term_spans``, ``index_body``,
  ``INDEX_VERSION``;
- :mod:`.query`: the grammar (in its docstring), ``parse`` (never raises), ``Query`` and
  ``Phrase``, ``matches`` (the reference semantics), ``to_fts5`` and ``to_tsquery``;
- :mod:`.ranking`: ``rank``, BM25 over the candidate window;
- :mod:`.snippet`: ``make_snippet`` and ``Snippet``, safe to print and to put in HTML.
"""
