-- The operator's scheduler reads every due time from an index (no per-object
-- timers): deadlines, restages and callbacks have theirs since 0001; these two
-- add the last two kinds of delayed work.

-- Pending paths of a timed-out job still to be cancelled in Scout. Set in the
-- same transaction that times the job out, cleared once Scout accepted the
-- cancel, pushed forward while it fails: a restart cannot lose the cancel.
ALTER TABLE jobs ADD COLUMN cancel_due_at timestamptz;
CREATE INDEX jobs_cancel_due ON jobs (cancel_due_at) WHERE cancel_due_at IS NOT NULL;

-- When the StagingJob is to be deleted (ttlSecondsAfterFinished after the
-- callback was delivered or given up). NULL: keep it.
ALTER TABLE jobs ADD COLUMN delete_at timestamptz;
CREATE INDEX jobs_delete_due ON jobs (delete_at) WHERE delete_at IS NOT NULL;
