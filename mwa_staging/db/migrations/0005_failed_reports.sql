-- The failed-job report of the original API (/get_failed_joblist, /get_failed_job):
-- when a job ends with files that failed or were never staged, its list of those
-- files is kept for REPORT_EXPIREDAYS days, also after the StagingJob and its
-- rows are deleted. A trigger writes it in the very transaction that ends the
-- job, whoever ends it (the bridge's last arrival, the operator's deadline or
-- failure, a restage pass), so no ending can miss its report.

CREATE TABLE failed_reports (
    id           bigserial PRIMARY KEY,
    -- jobs.id when written; no foreign key: the report outlives the job.
    job          bigint NOT NULL UNIQUE,
    namespace    text NOT NULL,
    name         text NOT NULL,
    job_id       bigint NOT NULL,
    report_time  timestamptz NOT NULL DEFAULT now(),
    return_code  integer,
    total_files  integer NOT NULL,
    -- files that failed or were never staged (the rows of failed_report_files)
    error_files  integer NOT NULL
);
CREATE INDEX failed_reports_job_id ON failed_reports (namespace, job_id, report_time DESC);
CREATE INDEX failed_reports_time ON failed_reports (report_time);

CREATE TABLE failed_report_files (
    report  bigint NOT NULL REFERENCES failed_reports (id) ON DELETE CASCADE,
    path    text NOT NULL,
    -- the archive's error, or 'never staged'
    error   text NOT NULL,
    PRIMARY KEY (report, path)
);

CREATE FUNCTION write_failed_report() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    report_id bigint;
BEGIN
    INSERT INTO failed_reports (job, namespace, name, job_id, return_code, total_files,
                                error_files)
    VALUES (NEW.id, NEW.namespace, NEW.name, NEW.job_id, NEW.return_code, NEW.total_files,
            NEW.total_files - NEW.ready_files)
    ON CONFLICT (job) DO NOTHING
    RETURNING id INTO report_id;
    IF report_id IS NOT NULL THEN
        INSERT INTO failed_report_files (report, path, error)
        SELECT report_id, path, coalesce(error, 'never staged')
        FROM job_files WHERE job = NEW.id AND state <> 1;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_failed_report
    AFTER UPDATE OF state ON jobs
    FOR EACH ROW
    WHEN (NEW.state IN ('complete', 'failed') AND OLD.state NOT IN ('complete', 'failed')
          AND NEW.ready_files < NEW.total_files)
    EXECUTE FUNCTION write_failed_report();
