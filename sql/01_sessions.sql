-- The session ledger: one row per sync, its progress and its outcome; and the log lines of each.

CREATE TABLE employes_sync_sessions (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    source              text NOT NULL CHECK (source IN ('manual', 'scheduler', 'api', 'webhook')),
    triggered_by        text NOT NULL CHECK (length(triggered_by) BETWEEN 1 AND 320 AND triggered_by !~ '[[:cntrl:]]'),
    status              text NOT NULL DEFAULT 'queued'
                        CHECK (status IN ('queued', 'running', 'completed', 'partial', 'error', 'cancelled')),
    created_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    started_at          timestamptz,
    completed_at        timestamptz,
    worker_pid          integer,
    heartbeat_at        timestamptz,
    pages_total         integer,
    pages_done          integer NOT NULL DEFAULT 0,
    employees_total     integer,
    employees_done      integer NOT NULL DEFAULT 0,
    api_requests        integer NOT NULL DEFAULT 0,
    retries             integer NOT NULL DEFAULT 0,
    versions_written    integer NOT NULL DEFAULT 0,
    changes_detected    integer NOT NULL DEFAULT 0,
    employees_deleted   integer NOT NULL DEFAULT 0,
    errors              integer NOT NULL DEFAULT 0,
    error               text,
    snapshot_complete   boolean,
    cancel_requested_at timestamptz,
    requested_xid       xid8,
    worker_instance     text,
    list_moved          integer NOT NULL DEFAULT 0,
    records_rejected    integer NOT NULL DEFAULT 0,
    requested_company   uuid,
    CONSTRAINT employes_sync_sessions_finished_has_time
        CHECK ((status IN ('queued', 'running')) = (completed_at IS NULL))
);

-- Two active sessions are impossible, whatever the callers do.
CREATE UNIQUE INDEX employes_sync_sessions_one_active
    ON employes_sync_sessions ((true)) WHERE status IN ('queued', 'running');
CREATE INDEX employes_sync_sessions_created_at ON employes_sync_sessions (created_at DESC);

COMMENT ON TABLE employes_sync_sessions IS
    'One row per Employes sync: who triggered it, its status (queued, running, completed, partial, error, cancelled), live progress and true counters.';
COMMENT ON COLUMN employes_sync_sessions.source IS 'What triggered the sync: manual, scheduler, api or webhook.';
COMMENT ON COLUMN employes_sync_sessions.triggered_by IS 'Who triggered it: the argument, else the PostgREST JWT email claim, else the role.';
COMMENT ON COLUMN employes_sync_sessions.status IS 'queued -> running -> completed | partial | error | cancelled.';
COMMENT ON COLUMN employes_sync_sessions.error IS 'What went wrong, in one line of at most 500 characters (where, and what to do); the log rows carry the details.';
COMMENT ON COLUMN employes_sync_sessions.worker_pid IS 'PID of the background worker running this session.';
COMMENT ON COLUMN employes_sync_sessions.heartbeat_at IS 'Last time the worker recorded progress.';
COMMENT ON COLUMN employes_sync_sessions.pages_total IS 'Pages of the employee list, as the API reported.';
COMMENT ON COLUMN employes_sync_sessions.employees_total IS 'Employees in the list, as the API reported (total).';
COMMENT ON COLUMN employes_sync_sessions.employees_done IS 'Employees whose employment history has been processed.';
COMMENT ON COLUMN employes_sync_sessions.api_requests IS 'HTTP requests really sent, retries included.';
COMMENT ON COLUMN employes_sync_sessions.retries IS 'Requests repeated after a 429, 5xx, timeout or reset.';
COMMENT ON COLUMN employes_sync_sessions.versions_written IS 'New raw versions written (0 when nothing changed).';
COMMENT ON COLUMN employes_sync_sessions.changes_detected IS 'Rows written to employes_changes.';
COMMENT ON COLUMN employes_sync_sessions.employees_deleted IS 'Employees marked deleted: missing from a complete snapshot, and confirmed gone by the API (404 on GET /employees/{id}).';
COMMENT ON COLUMN employes_sync_sessions.snapshot_complete IS 'Every list page fetched and the count equal to the API total: only then are deletions detected.';
COMMENT ON COLUMN employes_sync_sessions.cancel_requested_at IS 'Set by employes_sync_cancel(); the worker stops at the next page boundary.';
COMMENT ON COLUMN employes_sync_sessions.requested_xid IS 'Transaction that created the session; the worker waits for it to commit.';
COMMENT ON COLUMN employes_sync_sessions.list_moved IS 'Employees missing from a complete list whom the API still has (GET /employees/{id} answered): the list moved while the sync read it. They are not marked deleted; the next sync reads them again.';
COMMENT ON COLUMN employes_sync_sessions.records_rejected IS 'Records that could not be stored as received (a NUL character, or a value the database refuses): each was left out alone, its earlier version stays current, and the log names the employee and the reason.';
COMMENT ON COLUMN employes_sync_sessions.requested_company IS 'The one company this session syncs, when employes_sync_trigger named one; NULL: every enabled company. The per-company results are in employes_sync_session_companies.';
COMMENT ON COLUMN employes_sync_sessions.worker_instance IS 'The server and database the session''s worker runs in (employes_sync_instance()): a queued or running session that came from another database (a restored dump), an old primary (a failover) or before a restart has no worker here.';

-- What a session did for each company it synced: its own status, counts and error. The
-- session row holds the totals.
CREATE TABLE employes_sync_session_companies (
    session_id        uuid NOT NULL REFERENCES employes_sync_sessions (id) ON DELETE CASCADE,
    company_id        uuid NOT NULL,
    status            text NOT NULL DEFAULT 'running'
                      CHECK (status IN ('running', 'completed', 'partial', 'error', 'cancelled')),
    started_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    completed_at      timestamptz,
    pages_total       integer,
    pages_done        integer NOT NULL DEFAULT 0,
    employees_total   integer,
    employees_done    integer NOT NULL DEFAULT 0,
    api_requests      integer NOT NULL DEFAULT 0,
    retries           integer NOT NULL DEFAULT 0,
    versions_written  integer NOT NULL DEFAULT 0,
    changes_detected  integer NOT NULL DEFAULT 0,
    employees_deleted integer NOT NULL DEFAULT 0,
    list_moved        integer NOT NULL DEFAULT 0,
    records_rejected  integer NOT NULL DEFAULT 0,
    errors            integer NOT NULL DEFAULT 0,
    error             text,
    snapshot_complete boolean,
    PRIMARY KEY (session_id, company_id),
    CONSTRAINT employes_sync_session_companies_finished_has_time
        CHECK ((status = 'running') = (completed_at IS NULL))
);
SELECT pg_extension_config_dump('employes_sync_session_companies', '');
CREATE INDEX employes_sync_session_companies_company ON employes_sync_session_companies (company_id, started_at DESC);
COMMENT ON TABLE employes_sync_session_companies IS
    'One row per company a session synced: its status (running, completed, partial, error, cancelled), counts and error; the session row holds the totals.';

CREATE TABLE employes_sync_logs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id  uuid REFERENCES employes_sync_sessions (id) ON DELETE CASCADE,
    logged_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    level       text NOT NULL CHECK (level IN ('debug', 'info', 'warning', 'error')),
    step        text NOT NULL,
    message     text NOT NULL,
    details     jsonb
);
-- pg_dump carries the rows of every table that holds state, and the values of their sequences
-- (an extension's tables are otherwise left out of a dump: its CREATE EXTENSION makes them empty).
SELECT pg_extension_config_dump('employes_sync_sessions', '');
SELECT pg_extension_config_dump('employes_sync_logs', '');
SELECT pg_extension_config_dump('employes_sync_logs_id_seq', '');

CREATE INDEX employes_sync_logs_session ON employes_sync_logs (session_id, id);
CREATE INDEX employes_sync_logs_logged_at ON employes_sync_logs (logged_at);

COMMENT ON TABLE employes_sync_logs IS
    'Log lines of each sync session (step: trigger, start, snapshot, history, changes, timeline, finish, recovery). Pruned after employes_sync.log_retention_days.';
