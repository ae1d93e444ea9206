"""``python -m mwa_staging_operator`` (how the local stack starts the operator)."""

from mwa_staging_operator.main import run

run()
