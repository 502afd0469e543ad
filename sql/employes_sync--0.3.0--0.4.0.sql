-- employes_sync 0.3.0 -> 0.4.0
-- * A record the database cannot store (a NUL character, a value it refuses) is left out alone
--   and counted in the new records_rejected column; its neighbours are applied.
-- * The status panel and the scheduler report mask the API base URL and the company id in
--   session errors for a role that cannot read those settings (employes_sync_mask_settings).
-- * Session errors are one line of at most 500 characters.
-- Every row is kept: one column is added (0 for the sessions so far).
\echo Use "ALTER EXTENSION employes_sync UPDATE TO '0.4.0'" to load this file. \quit

ALTER TABLE employes_sync_sessions ADD COLUMN records_rejected integer NOT NULL DEFAULT 0;
COMMENT ON COLUMN employes_sync_sessions.records_rejected IS 'Records that could not be stored as received (a NUL character, or a value the database refuses): each was left out alone, its earlier version stays current, and the log names the employee and the reason.';
COMMENT ON COLUMN employes_sync_sessions.error IS 'What went wrong, in one line of at most 500 characters (where, and what to do); the log rows carry the details.';

-- Messages name the API's URL and the company, which are superuser-only settings: a role that
-- cannot read them (an app's role on the status panel) sees them masked.
CREATE FUNCTION employes_sync_mask_settings(message text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    caller text := coalesce(nullif(current_setting('role'), 'none'), session_user::text);
    base_url text;
    company text;
BEGIN
    IF message IS NULL
       OR (SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = caller)
       OR pg_has_role(caller, 'pg_read_all_settings', 'MEMBER') THEN
        RETURN message;
    END IF;
    base_url := nullif(btrim(current_setting('employes_sync.base_url', true)), '');
    company := nullif(btrim(current_setting('employes_sync.company_id', true)), '');
    IF base_url IS NOT NULL THEN
        message := replace(message, rtrim(base_url, '/'), '<employes_sync.base_url>');
    END IF;
    IF company IS NOT NULL THEN
        message := replace(message, company, '<employes_sync.company_id>');
    END IF;
    RETURN message;
END
$$;
COMMENT ON FUNCTION employes_sync_mask_settings(text) IS
    'A message with the API base URL and the company id masked, unless the calling role (SET ROLE, else the session user) may read those settings (a superuser, or a member of pg_read_all_settings).';

CREATE OR REPLACE FUNCTION employes_sync_scheduler_status()
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    job_id bigint;
    job_schedule text;
    job_command text;
    job_active boolean;
    ext_schema text;
    command text;
    description text;
    next_run timestamptz;
    every interval;
    runs jsonb;
    out jsonb;
BEGIN
    out := jsonb_build_object(
        'available', false, 'enabled', false, 'job_name', 'employes-sync', 'job_id', NULL,
        'schedule', NULL, 'description', NULL, 'timezone', 'UTC',
        'timezone_note', 'pg_cron 1.4 runs schedules in UTC; times here are timestamptz',
        'next_run_at', NULL, 'interval_seconds', NULL, 'command', NULL,
        'last_run', NULL, 'recent_runs', '[]'::jsonb);
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
        RETURN out || jsonb_build_object('message',
            'pg_cron is not installed in this database: add pg_cron to shared_preload_libraries, restart, then CREATE EXTENSION pg_cron');
    END IF;
    out := out || jsonb_build_object('available', true);

    SELECT pronamespace::regnamespace::text INTO ext_schema
      FROM pg_proc WHERE oid = 'employes_sync_trigger(text, text)'::regprocedure;
    command := format('SELECT %s.employes_sync_trigger(%L, %L)', ext_schema, 'scheduler', 'system');

    -- Ours first (the functions run as the extension owner, who owns the job).
    EXECUTE 'SELECT jobid, schedule, command, active FROM cron.job WHERE jobname = $1
              ORDER BY (username = current_user) DESC, jobid DESC LIMIT 1'
        INTO job_id, job_schedule, job_command, job_active USING 'employes-sync';

    IF job_id IS NOT NULL THEN
        BEGIN
            description := employes_sync_cron_describe(job_schedule);
            IF job_active THEN
                next_run := employes_sync_cron_next(job_schedule, clock_timestamp());
            END IF;
            every := employes_sync_cron_interval(job_schedule, clock_timestamp());
        EXCEPTION WHEN invalid_parameter_value THEN
            -- Changed behind our back (cron.alter_job) to something we do not read.
            description := format('cron %s (not understood by employes_sync; set it again with employes_sync_schedule())', job_schedule);
        END;
        out := out || jsonb_build_object(
            'enabled', job_active, 'job_id', job_id, 'schedule', job_schedule, 'description', description,
            'next_run_at', next_run, 'interval_seconds', extract(epoch FROM every)::bigint, 'command', job_command);
    END IF;

    -- Runs of our job, or of our command under an earlier job (unscheduled, scheduled again).
    -- A run is linked to the session its trigger created or joined through the trigger's log line
    -- (source scheduler, logged during the run), else to a scheduler session created during it.
    EXECUTE $q$
        SELECT coalesce(jsonb_agg(x.run ORDER BY x.runid DESC), '[]'::jsonb)
          FROM (SELECT r.runid, jsonb_build_object(
                        'run_id', r.runid, 'job_id', r.jobid, 'status', r.status,
                        'start_time', r.start_time, 'end_time', r.end_time, 'message', r.return_message,
                        'session_id', s.id, 'session_status', s.status,
                        'joined', CASE WHEN s.id IS NULL THEN NULL ELSE s.source <> 'scheduler' OR s.created_at < r.start_time - interval '2 seconds' END,
                        'session', CASE WHEN s.id IS NULL THEN NULL ELSE jsonb_build_object(
                            'id', s.id, 'status', s.status, 'source', s.source, 'triggered_by', s.triggered_by,
                            'created_at', s.created_at, 'started_at', s.started_at, 'completed_at', s.completed_at,
                            'versions_written', s.versions_written, 'changes_detected', s.changes_detected,
                            'error', employes_sync_mask_settings(s.error)) END) AS run
                  FROM cron.job_run_details r
                  LEFT JOIN LATERAL (
                        SELECT l.session_id FROM employes_sync_logs l
                         WHERE l.step = 'trigger' AND l.details ->> 'source' = 'scheduler'
                           AND l.logged_at >= r.start_time - interval '2 seconds'
                           AND l.logged_at <= coalesce(r.end_time, clock_timestamp()) + interval '1 second'
                         ORDER BY l.logged_at, l.id LIMIT 1) lg ON r.start_time IS NOT NULL
                  LEFT JOIN LATERAL (
                        SELECT ss.id FROM employes_sync_sessions ss
                         WHERE ss.source = 'scheduler'
                           AND ss.created_at >= r.start_time - interval '2 seconds'
                           AND ss.created_at <= coalesce(r.end_time, clock_timestamp()) + interval '1 second'
                         ORDER BY ss.created_at LIMIT 1) sc ON r.start_time IS NOT NULL
                  LEFT JOIN employes_sync_sessions s ON s.id = coalesce(lg.session_id, sc.id)
                 WHERE r.jobid = $1 OR r.command = $2
                 ORDER BY r.runid DESC
                 LIMIT 10) x
    $q$ INTO runs USING job_id, command;

    RETURN out || jsonb_build_object('recent_runs', runs, 'last_run', runs -> 0);
END
$$;
COMMENT ON FUNCTION employes_sync_scheduler_status() IS
    'The pg_cron schedule as jsonb: available (pg_cron installed), enabled, job_id, schedule, description in plain words, timezone (UTC), next_run_at, interval_seconds, command, last_run and recent_runs (the last 10 cron.job_run_details rows: status, start_time, end_time, message, and the session each run created or joined).';

CREATE OR REPLACE FUNCTION employes_sync_status()
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    running employes_sync_sessions;
    last_session employes_sync_sessions;
    deciding employes_sync_sessions;
    stale text;
    last_success timestamptz;
    scheduler jsonb;
    max_age interval := interval '6 hours';
    state text;
    running_json jsonb;
    last_json jsonb;
BEGIN
    scheduler := employes_sync_scheduler_status();
    IF (scheduler ->> 'enabled')::boolean AND (scheduler ->> 'interval_seconds')::bigint > 0 THEN
        max_age := make_interval(secs => (scheduler ->> 'interval_seconds')::bigint);
    END IF;

    SELECT * INTO last_session FROM employes_sync_sessions
     WHERE status NOT IN ('queued', 'running') ORDER BY completed_at DESC, created_at DESC LIMIT 1;
    -- A cancelled sync says nothing about the data: the state follows the last one that ran to an end.
    SELECT * INTO deciding FROM employes_sync_sessions
     WHERE status IN ('completed', 'partial', 'error') ORDER BY completed_at DESC, created_at DESC LIMIT 1;
    SELECT max(completed_at) INTO last_success FROM employes_sync_sessions WHERE status = 'completed';
    SELECT * INTO running FROM employes_sync_sessions
     WHERE status IN ('queued', 'running') ORDER BY created_at DESC LIMIT 1;
    IF running.id IS NOT NULL THEN
        stale := employes_sync_session_stale_reason(running.status, running.worker_pid, running.worker_instance,
                                                    running.created_at);
        IF stale IS NOT NULL THEN
            -- The newest session (none can start while one is active), ended as it will be recorded.
            last_session := running;
            last_session.status := 'error';
            last_session.error := stale;
            last_session.errors := running.errors + 1;
            last_session.completed_at := coalesce(running.heartbeat_at, running.started_at, running.created_at);
            deciding := last_session;
            running := NULL;
        END IF;
    END IF;

    state := CASE
        WHEN running.id IS NOT NULL THEN 'syncing'
        WHEN deciding.id IS NULL THEN 'never'
        WHEN deciding.status IN ('error', 'partial') THEN 'error'
        WHEN deciding.completed_at >= clock_timestamp() - max_age THEN 'current'
        ELSE 'outdated'
    END;

    IF running.id IS NOT NULL THEN
        running_json := jsonb_build_object(
            'id', running.id, 'status', running.status, 'source', running.source, 'triggered_by', running.triggered_by,
            'created_at', running.created_at, 'started_at', running.started_at, 'heartbeat_at', running.heartbeat_at,
            'pages_total', running.pages_total, 'pages_done', running.pages_done,
            'employees_total', running.employees_total, 'employees_done', running.employees_done,
            'api_requests', running.api_requests,
            -- One request per list page and one per employee's history: the work left.
            'progress_percent', CASE
                WHEN running.status = 'queued'
                  OR coalesce(running.pages_total, 0) + coalesce(running.employees_total, 0) = 0 THEN 0
                ELSE least(99, floor(100.0 * (running.pages_done + running.employees_done)
                    / (coalesce(running.pages_total, 0) + coalesce(running.employees_total, 0))))::integer
            END,
            'cancel_requested', running.cancel_requested_at IS NOT NULL);
    END IF;
    IF last_session.id IS NOT NULL THEN
        last_json := jsonb_build_object(
            'id', last_session.id, 'status', last_session.status, 'source', last_session.source,
            'triggered_by', last_session.triggered_by, 'created_at', last_session.created_at,
            'started_at', last_session.started_at, 'completed_at', last_session.completed_at,
            'duration_seconds', round(extract(epoch FROM last_session.completed_at - coalesce(last_session.started_at, last_session.created_at)), 1),
            'employees_total', last_session.employees_total, 'employees_done', last_session.employees_done,
            'api_requests', last_session.api_requests, 'versions_written', last_session.versions_written,
            'changes_detected', last_session.changes_detected, 'employees_deleted', last_session.employees_deleted,
            'list_moved', last_session.list_moved, 'records_rejected', last_session.records_rejected,
            'errors', last_session.errors, 'error', employes_sync_mask_settings(last_session.error),
            'worker_gone', stale IS NOT NULL);
    END IF;

    RETURN jsonb_build_object(
        'state', state,
        'checked_at', clock_timestamp(),
        'standby', pg_is_in_recovery(),
        'last_session', last_json,
        'last_success_at', last_success,
        'running_session', running_json,
        'outdated_after_seconds', extract(epoch FROM max_age)::bigint,
        'employees_synced', (SELECT count(*) FROM employes_raw_data WHERE kind = 'employee' AND valid_to IS NULL),
        'changes_24h', (SELECT count(*) FROM employes_changes WHERE detected_at > clock_timestamp() - interval '24 hours'),
        'scheduler', scheduler);
END
$$;
COMMENT ON FUNCTION employes_sync_status() IS
    'Everything a "Sync now" panel shows, as jsonb: state (never, syncing, current, outdated = last completed sync older than the schedule''s interval or 6 hours when unscheduled, error = the last sync that ran to an end failed or was partial), standby, last_session (worker_gone: ended because its worker is gone, not yet recorded), last_success_at, running_session with progress_percent, employees_synced, changes_24h, scheduler (employes_sync_scheduler_status()). Reads only: works in a read-only transaction and on a standby.';

-- The new function gets nothing for PUBLIC (nor for Supabase's roles, which default privileges
-- may have handed it); the grants on the existing ones are the user's and stay as they are.
REVOKE ALL ON FUNCTION employes_sync_mask_settings(text) FROM PUBLIC;
DO $$
DECLARE
    grantee text;
BEGIN
    FOR grantee IN SELECT rolname FROM pg_roles WHERE rolname IN ('anon', 'authenticated', 'service_role') LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION employes_sync_mask_settings(text) FROM %I', grantee);
    END LOOP;
END
$$;
