"""A search engine for argilla-server 2.8 that answers from Argilla's own SQL tables (no Elasticsearch).

Argilla stores every record, response, suggestion and vector in its SQL database; Elasticsearch is only a
secondary index there. This package registers a ``SearchEngine`` named ``sqlsearch`` whose write hooks are
no-ops and whose reads query the SQL database directly, so nothing can go stale and nothing needs reindexing:

* ``engine``: the ``SearchEngine`` subclass (search, progress, metadata metrics, similarity search);
* ``filters``: filter and sort scopes (record, metadata, suggestion, response) turned into SQL;
* ``dialects``: the few SQL fragments that differ between SQLite and PostgreSQL (JSON access, per-user order);
* ``fulltext``: text search (an FTS5 table kept in step by triggers on SQLite; ``tsvector`` on PostgreSQL);
* ``textquery``: the parser of Elasticsearch's ``simple_query_string`` syntax shared by both backends;
* ``userorder``: the per-user queue order (SQL arithmetic on SQLite, a seeded hash on PostgreSQL);
* ``indexes``: the index on ``records (dataset_id, status)`` the queue needs, created at server start.

Importing ``argilla_sqlsearch.engine`` registers the engine; the server and worker launchers do it before
anything else. ``textquery`` and ``userorder`` import nothing from Argilla, so they are usable (and tested)
outside the server venv.
"""

ENGINE_NAME = "sqlsearch"
