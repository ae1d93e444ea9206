"""The database: connections, migrations (``migrations/NNNN_*.sql``) and named queries.

Every SQL statement of the project lives in this package: the schema in the
numbered migration files, the queries by who runs them --
:mod:`~mwa_staging.db.jobs_queries` (the operator), :mod:`~mwa_staging.db.arrivals`
(the Kafka bridge), :mod:`~mwa_staging.db.status_queries` (the status
projection, both) -- and the completion rule both writers of file arrivals
share in :mod:`~mwa_staging.db.completion`. The values they take and give are
in :mod:`~mwa_staging.db.rows`; states and codes are query parameters
(:mod:`~mwa_staging.db.params`).
"""

from mwa_staging.db.connect import connect
from mwa_staging.db.migrate import migrate

__all__ = ["connect", "migrate"]
