"""The PostgreSQL backend (psycopg 3, optional psycopg_pool): everything that imports psycopg.

``sessiondb.open("postgresql://…")`` lands here (sessiondb/__init__.py imports it lazily, so
``import sessiondb.core`` never loads a driver: tests/contract/test_layout.py). One module per
responsibility: connections and transactions (connection.py), error translation (errors.py),
schema and migrations (schema.py), the NUL-safe text codec (text.py), rows (rows.py), the
search index and queries (search.py), the usage rollup (rollup.py), leases (leases.py), health
(health.py) and the primitives of the Store contract (backend.py).
"""
