-- Stage progress, so that a job that fails (or times out, or is deleted) part
-- way through its stage calls cancels exactly the paths Scout had accepted.
-- The create handler stages a job's paths in code-point order (COLLATE "C")
-- and, after each call Scout accepted, records the last path of that call
-- here: every path <= stage_cursor has been requested from the archive.
-- NULL: no stage call accepted yet. stage_requested_at set: all of them.
ALTER TABLE jobs ADD COLUMN stage_cursor text;

-- activeDeadlineSeconds applies from the job's start in every unfinished
-- state (a job stuck resolving times out too): the scheduler reads the
-- earliest deadline of all of them from this index.
DROP INDEX IF EXISTS jobs_deadline;
CREATE INDEX jobs_deadline ON jobs (deadline) WHERE state IN ('pending', 'resolving', 'staging');
