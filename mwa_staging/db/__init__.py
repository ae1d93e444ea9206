"""The database: connections, migrations (``migrations/NNNN_*.sql``) and named queries.

Every SQL statement of the project lives in this package: the schema in the
numbered migration files, the queries in :mod:`mwa_staging.db.queries`.
"""

from mwa_staging.db.connect import connect
from mwa_staging.db.migrate import migrate

__all__ = ["connect", "migrate"]
