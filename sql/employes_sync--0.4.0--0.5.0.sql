-- employes_sync 0.4.0 -> 0.5.0: several Employes companies in one database.
-- * Every history row knows its company: employes_raw_data, employes_changes and
--   employes_timeline get a company_id column (the last one), and employee ids are unique per
--   company. The rows so far belong to the company they were synced from: the setting
--   employes_sync.company_id (else the company the last sync logged). Without either, and with
--   history to keep, the update stops (55000) and says what to set; if the two differ it stops
--   too, rather than give the history to the wrong company.
-- * Companies are data: employes_sync_company_settings (dumped), their own tokens in
--   employes_sync_company_tokens (superuser-only, never dumped), the view employes_sync_companies
--   and the functions employes_sync_add_company, _remove_company, _pause_company,
--   _resume_company, _set_company_token. The configured company is added.
-- * A session records each company it synced in employes_sync_session_companies; the sessions
--   so far get their row there (they synced the configured company).
-- * employes_sync_trigger(source, triggered_by, company_id uuid DEFAULT NULL) and
--   employes_employee_as_of(employee_id, at, company_id uuid DEFAULT NULL) gain their company
--   argument; the timeline functions take the company. Functions whose arguments change are
--   dropped and created again: the EXECUTE grants given on them (to an app's role) are given
--   again on the new ones, and stay the database's own (pg_dump keeps writing them).
-- Every row is kept.
\echo Use "ALTER EXTENSION employes_sync UPDATE TO '0.5.0'" to load this file. \quit

-- Whose history this is.
DO $$
DECLARE
    setting text := nullif(btrim(coalesce(current_setting('employes_sync.company_id', true), '')), '');
    logged text;
    company text;
    history boolean := EXISTS (SELECT 1 FROM employes_raw_data) OR EXISTS (SELECT 1 FROM employes_changes)
                       OR EXISTS (SELECT 1 FROM employes_timeline);
BEGIN
    SELECT l.details ->> 'company_id' INTO logged
      FROM employes_sync_logs l
     WHERE l.step = 'start' AND jsonb_typeof(l.details -> 'company_id') = 'string'
     ORDER BY l.id DESC LIMIT 1;
    IF logged !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        logged := NULL;
    END IF;
    IF history AND setting IS NOT NULL AND logged IS NOT NULL AND lower(setting) <> lower(logged) THEN
        RAISE EXCEPTION 'cannot tell whose history this is: employes_sync.company_id is %, but the last sync fetched company %', setting, logged
            USING ERRCODE = '55000',
                  HINT = 'set employes_sync.company_id to the company the stored history was synced from, update, then set it to the other company: from 0.5.0 that adds the company and marks nobody of the first as deleted';
    END IF;
    company := coalesce(setting, logged);
    IF history AND company IS NULL THEN
        RAISE EXCEPTION 'cannot tell whose history this is: employes_sync.company_id is not set'
            USING ERRCODE = '55000',
                  HINT = 'set employes_sync.company_id to the company the stored history was synced from (ALTER SYSTEM SET employes_sync.company_id = ''...''; SELECT pg_reload_conf();), then run ALTER EXTENSION employes_sync UPDATE again';
    END IF;
    PERFORM set_config('employes_sync_upgrade.company', coalesce(lower(company), ''), true);
    IF history THEN
        RAISE NOTICE 'employes_sync 0.5.0: the stored history belongs to company %', lower(company);
    END IF;
END
$$;

-- The company of every history row: added as the last column, filled with the company at once
-- (a constant default is stored once, not written into every row), then without a default.
DO $$
DECLARE
    company text := nullif(current_setting('employes_sync_upgrade.company'), '');
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['employes_raw_data', 'employes_changes', 'employes_timeline'] LOOP
        IF company IS NULL THEN
            EXECUTE format('ALTER TABLE %I ADD COLUMN company_id uuid NOT NULL', t);
        ELSE
            EXECUTE format('ALTER TABLE %I ADD COLUMN company_id uuid NOT NULL DEFAULT %L', t, company);
            EXECUTE format('ALTER TABLE %I ALTER COLUMN company_id DROP DEFAULT', t);
        END IF;
    END LOOP;
END
$$;
COMMENT ON COLUMN employes_raw_data.company_id IS 'The Employes company (administration) the record belongs to: employee ids are unique per company.';
COMMENT ON COLUMN employes_changes.company_id IS 'The Employes company of the employee.';
COMMENT ON COLUMN employes_timeline.company_id IS 'The Employes company of the employee.';

-- Employee ids are unique per company.
ALTER TABLE employes_raw_data DROP CONSTRAINT employes_raw_data_version_unique;
ALTER TABLE employes_raw_data ADD CONSTRAINT employes_raw_data_version_unique UNIQUE (company_id, kind, employee_id, version);
DROP INDEX employes_raw_data_current;
-- At most one current version per record (of a company). It also carries the content hash, so a sync reads the
-- hashes of every current version from this index alone (an index-only scan of a few tens of MB)
-- instead of the whole table with its payloads.
CREATE UNIQUE INDEX employes_raw_data_current
    ON employes_raw_data (company_id, kind, employee_id) INCLUDE (content_hash) WHERE valid_to IS NULL;
DROP INDEX employes_timeline_key;
CREATE UNIQUE INDEX employes_timeline_key ON employes_timeline (company_id, employee_id, event_type, event_key);

-- Sessions: the company asked for, and what each company's sync did.
ALTER TABLE employes_sync_sessions ADD COLUMN requested_company uuid;
COMMENT ON COLUMN employes_sync_sessions.requested_company IS 'The one company this session syncs, when employes_sync_trigger named one; NULL: every enabled company. The per-company results are in employes_sync_session_companies.';
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

-- The sessions that ended so far synced the configured company.
INSERT INTO employes_sync_session_companies
       (session_id, company_id, status, started_at, completed_at, pages_total, pages_done, employees_total,
        employees_done, api_requests, retries, versions_written, changes_detected, employees_deleted, list_moved,
        records_rejected, errors, error, snapshot_complete)
SELECT s.id, current_setting('employes_sync_upgrade.company')::uuid, s.status, coalesce(s.started_at, s.created_at),
       s.completed_at, s.pages_total, s.pages_done, s.employees_total, s.employees_done, s.api_requests, s.retries,
       s.versions_written, s.changes_detected, s.employees_deleted, s.list_moved, s.records_rejected, s.errors,
       s.error, s.snapshot_complete
  FROM employes_sync_sessions s
 WHERE s.status NOT IN ('queued', 'running') AND current_setting('employes_sync_upgrade.company') <> '';

-- What the functions whose arguments change grant to other roles (an app's role), so it can be
-- given again on the new ones; their grants to PUBLIC and the owner's are the extension's own.
SELECT set_config('employes_sync_upgrade.acl', coalesce(jsonb_object_agg(n.new_signature, p.proacl::text)::text, '{}'), true)
  FROM (VALUES ('employes_sync_trigger(text,text)', 'employes_sync_trigger(text,text,uuid)'),
               ('employes_employee_as_of(text,timestamp with time zone)', 'employes_employee_as_of(text,timestamp with time zone,uuid)'),
               ('employes_timeline_change_events(text[])', 'employes_timeline_change_events(uuid,text[])'),
               ('employes_timeline_events(text[])', 'employes_timeline_events(uuid,text[])'),
               ('employes_timeline_refresh(text[])', 'employes_timeline_refresh(text[],uuid)'),
               ('employes_timeline_apply(text[],text[],text[],text[],date[],text[],text[],text[],text[],text[],text[])',
                'employes_timeline_apply(uuid,text[],text[],text[],text[],date[],text[],text[],text[],text[],text[],text[])'))
       AS n (old_signature, new_signature)
  JOIN pg_proc p ON p.oid = n.old_signature::regprocedure
 WHERE p.proacl IS NOT NULL;

-- The timeline, per company.
DROP FUNCTION employes_timeline_refresh(text[]);
DROP FUNCTION employes_timeline_apply(text[], text[], text[], text[], date[], text[], text[], text[], text[], text[], text[]);
DROP FUNCTION employes_timeline_events(text[]);
DROP FUNCTION employes_timeline_change_events(text[]);

-- The events of detected changes: status changed, left (deleted), restored.
CREATE FUNCTION employes_timeline_change_events(company uuid, employee_ids text[])
RETURNS TABLE (employee_id text, event_date date, event_type text, title text, details jsonb, event_key text,
               company_id uuid)
LANGUAGE sql STABLE
SET search_path = pg_catalog, @extschema@, pg_temp
ROWS 8
AS $$
    SELECT c.employee_id,
           coalesce(c.effective_date, (c.detected_at AT TIME ZONE 'UTC')::date),
           CASE c.change_type WHEN 'status_change' THEN 'status_changed' WHEN 'deleted' THEN 'left' ELSE 'restored' END,
           CASE c.change_type
               WHEN 'status_change' THEN 'Status changed from ' || coalesce(c.old_value #>> '{}', 'none')
                                         || ' to ' || coalesce(c.new_value #>> '{}', 'none')
               WHEN 'deleted' THEN 'Left (no longer listed by Employes)'
               ELSE 'Restored (listed by Employes again)' END,
           jsonb_build_object('old', CASE WHEN c.change_type = 'status_change' THEN c.old_value END,
                              'new', CASE WHEN c.change_type = 'status_change' THEN c.new_value END,
                              'detected_at', c.detected_at, 'session_id', c.session_id, 'change_id', c.id),
           'change:' || c.id,
           c.company_id
    FROM (SELECT DISTINCT unnest(employee_ids) AS employee_id) i
    JOIN employes_changes c ON c.employee_id = i.employee_id AND c.company_id = company
    WHERE c.kind = 'employee' AND c.change_type IN ('status_change', 'deleted', 'restored')
$$;
COMMENT ON FUNCTION employes_timeline_change_events(uuid, text[]) IS
    'The timeline events (status changed, left, restored) of the given employees'' detected changes, in one company.';

CREATE FUNCTION employes_timeline_events(company uuid, employee_ids text[])
RETURNS TABLE (employee_id text, event_date date, event_type text, title text, details jsonb, event_key text,
               company_id uuid)
LANGUAGE sql STABLE
SET search_path = pg_catalog, @extschema@, pg_temp
-- No Memoize: it would hash every whole payload to cache its events, and each is read once.
SET enable_memoize = off
-- No JIT: compiling costs more than running, up to a second per call when the planner has no
-- statistics yet (a fresh install's first sync).
SET jit = off
AS $$
    SELECT l.employee_id, e.event_date, e.event_type, e.title,
           employes_timeline_details(e.event_type, e.details, e.old_wage, e.new_wage), e.event_key, company
    -- One index probe per employee (version_unique: company_id, kind, employee_id, version),
    -- whatever the planner believes about the table's size.
    FROM (SELECT DISTINCT unnest(employee_ids) AS employee_id) i
    CROSS JOIN LATERAL (SELECT d.employee_id, d.payload FROM employes_raw_data d
                        WHERE d.company_id = company AND d.kind = 'employments' AND d.employee_id = i.employee_id
                        ORDER BY d.version DESC LIMIT 1) l
    CROSS JOIN LATERAL employes_sync_employment_events(l.payload::text) e
    UNION ALL
    SELECT * FROM employes_timeline_change_events(company, employee_ids)
$$;
COMMENT ON FUNCTION employes_timeline_events(uuid, text[]) IS
    'Computes the timeline events of the given employees of one company from their latest /employments version and their detected changes.';

-- Recomputes the timeline rows of these employees (all when NULL) of a company (every company
-- when NULL) from their latest /employments version and their detected changes, and writes only
-- what differs.
CREATE FUNCTION employes_timeline_refresh(employee_ids text[] DEFAULT NULL, company uuid DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, @extschema@, pg_temp
-- See employes_timeline_events: JIT compiling cost up to a second per call on a first sync.
SET jit = off
AS $$
DECLARE
    c uuid;
    ids text[];
    n bigint;
    total bigint := 0;
BEGIN
    FOR c IN SELECT company UNION SELECT DISTINCT r.company_id FROM employes_raw_data r WHERE company IS NULL LOOP
        CONTINUE WHEN c IS NULL;
        ids := coalesce(employee_ids, ARRAY(SELECT DISTINCT r.employee_id FROM employes_raw_data r WHERE r.company_id = c));
        -- A dynamic statement is planned for these ids every time: a plan cached while the tables
        -- were small would scan everything on every call.
        -- The stored events of these employees are read once, by one index probe per employee
        -- (OFFSET 0 keeps the probe whatever the statistics say: on a fresh install there are none,
        -- and a join planned for an "empty" table read the whole timeline on every call). Only what
        -- differs is written: events whose key is gone are deleted, new keys inserted, changed ones
        -- updated, and identical rows are left alone. Deletes touch only keys absent from the new
        -- events and the upsert only keys present, so the two never meet.
        EXECUTE $q$
            WITH ev AS MATERIALIZED (
                SELECT * FROM employes_timeline_events($2, $1)
            ), old AS MATERIALIZED (
                SELECT o.*
                  FROM (SELECT DISTINCT unnest($1) AS employee_id) i
                 CROSS JOIN LATERAL (SELECT x.ctid AS row_id, x.employee_id, x.event_date, x.event_type, x.title,
                                            x.details, x.event_key
                                       FROM employes_timeline x
                                      WHERE x.company_id = $2 AND x.employee_id = i.employee_id OFFSET 0) o
            ), gone AS (
                DELETE FROM employes_timeline t
                 WHERE t.ctid = ANY (ARRAY(
                     SELECT old.row_id FROM old
                      WHERE NOT EXISTS (SELECT 1 FROM ev WHERE ev.employee_id = old.employee_id AND ev.event_type = old.event_type
                                                           AND ev.event_key = old.event_key)))
            )
            INSERT INTO employes_timeline AS t
            SELECT * FROM ev
             WHERE NOT EXISTS (SELECT 1 FROM old
                                WHERE old.employee_id = ev.employee_id AND old.event_type = ev.event_type AND old.event_key = ev.event_key
                                  AND old.event_date = ev.event_date AND old.title = ev.title
                                  -- byte for byte (the binary equality of the *= operator): 4003 and 4003.0
                                  -- are equal jsonb, but a rebuild writes what the payload says, and
                                  -- comparing the bytes costs no conversion to text
                                  AND record_image_eq(ROW(old.details), ROW(ev.details)))
            ON CONFLICT (company_id, employee_id, event_type, event_key)
            DO UPDATE SET event_date = excluded.event_date, title = excluded.title, details = excluded.details
        $q$ USING ids, c;
        GET DIAGNOSTICS n = ROW_COUNT;
        total := total + n;
    END LOOP;
    RETURN total;
END
$$;
COMMENT ON FUNCTION employes_timeline_refresh(text[], uuid) IS
    'Recomputes the timeline rows of the given employees (all when NULL) of a company (every company when NULL) and writes only the differences; returns the rows inserted or updated. Syncs call it for the employees whose status changed, and for a payload whose events they cannot compute themselves.';

-- Applies a change of employment events that a sync computed itself: when it writes a new
-- /employments version, it computes the events of the old payload and of the new one with
-- employes_sync_employment_events' rules (core/src/timeline.rs) and passes the difference: the
-- keys of events to delete (gone_*) and the events to insert or update (e_*, one element per
-- event). The stored rows are the old payload's events, so the difference is all that needs
-- writing: a raise writes one row instead of reading and comparing the employee's whole
-- timeline. Internal: the sync worker calls it, for one company at a time.
CREATE FUNCTION employes_timeline_apply(
    company uuid, gone_employee text[], gone_type text[], gone_key text[],
    e_employee text[], e_date date[], e_type text[], e_title text[], e_details text[], e_key text[],
    e_old_wage text[], e_new_wage text[])
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, @extschema@, pg_temp
SET jit = off
AS $$
DECLARE
    deleted bigint := 0;
    written bigint;
BEGIN
    IF num_nulls(company, gone_employee, gone_type, gone_key, e_employee, e_date, e_type, e_title, e_details, e_key,
                 e_old_wage, e_new_wage) > 0
       OR cardinality(gone_type) <> cardinality(gone_employee) OR cardinality(gone_key) <> cardinality(gone_employee)
       OR cardinality(e_date) <> cardinality(e_employee) OR cardinality(e_type) <> cardinality(e_employee)
       OR cardinality(e_title) <> cardinality(e_employee) OR cardinality(e_details) <> cardinality(e_employee)
       OR cardinality(e_key) <> cardinality(e_employee) OR cardinality(e_old_wage) <> cardinality(e_employee)
       OR cardinality(e_new_wage) <> cardinality(e_employee) THEN
        RAISE EXCEPTION 'employes_timeline_apply: the company, the keys to delete and the events to write must be non-NULL, the arrays of one length each'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'gone_employee, gone_type and gone_key hold one element per event to delete; e_employee to e_new_wage one per event to write.';
    END IF;
    IF cardinality(gone_employee) > 0 THEN
        -- One index probe per key, whatever the statistics say (OFFSET 0).
        DELETE FROM employes_timeline t
         WHERE t.ctid = ANY (ARRAY(
             SELECT x.ctid
               FROM unnest(gone_employee, gone_type, gone_key) AS g (employee_id, event_type, event_key)
              CROSS JOIN LATERAL (SELECT x.ctid FROM employes_timeline x
                                   WHERE x.company_id = company AND x.employee_id = g.employee_id
                                     AND x.event_type = g.event_type AND x.event_key = g.event_key OFFSET 0) x));
        GET DIAGNOSTICS deleted = ROW_COUNT;
    END IF;
    INSERT INTO employes_timeline AS t
    SELECT x.employee_id, x.event_date, x.event_type, x.title,
           employes_timeline_details(x.event_type, x.details, x.old_wage, x.new_wage), x.event_key, company
      FROM unnest(e_employee, e_date, e_type, e_title, e_details, e_key, e_old_wage, e_new_wage)
           AS x (employee_id, event_date, event_type, title, details, event_key, old_wage, new_wage)
    ON CONFLICT (company_id, employee_id, event_type, event_key)
    DO UPDATE SET event_date = excluded.event_date, title = excluded.title, details = excluded.details;
    GET DIAGNOSTICS written = ROW_COUNT;
    RETURN deleted + written;
END
$$;
COMMENT ON FUNCTION employes_timeline_apply(uuid, text[], text[], text[], text[], date[], text[], text[], text[], text[], text[], text[]) IS
    'Internal: deletes the given employment events (by employee, type and key) of a company and inserts or updates the given ones; returns the rows deleted, inserted or updated.';

REVOKE ALL ON FUNCTION employes_timeline_change_events(uuid, text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION employes_timeline_events(uuid, text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION employes_timeline_refresh(text[], uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION employes_timeline_apply(uuid, text[], text[], text[], text[], date[], text[], text[], text[], text[], text[], text[]) FROM PUBLIC;

-- The views show each row's company.
CREATE OR REPLACE VIEW employes_current AS
SELECT r.employee_id,
       employes_sync_jnum(r.payload -> 'employee_number')::bigint AS employee_number,
       concat_ws(' ', nullif(btrim(r.payload ->> 'first_name'), ''), nullif(btrim(r.payload ->> 'surname_prefix'), ''),
                 nullif(btrim(r.payload ->> 'surname'), '')) AS full_name,
       r.payload ->> 'first_name' AS first_name,
       r.payload ->> 'surname_prefix' AS surname_prefix,
       r.payload ->> 'surname' AS surname,
       r.payload ->> 'initials' AS initials,
       r.payload ->> 'email' AS email,
       r.payload ->> 'phone_number' AS phone_number,
       r.payload ->> 'status' AS status,
       employes_sync_jdate(r.payload -> 'date_of_birth') AS date_of_birth,
       r.payload ->> 'city' AS city,
       employes_sync_jdate(r.payload #> '{employment,start_date}') AS employment_start,
       employes_sync_jdate(r.payload #> '{employment,end_date}') AS employment_end,
       employes_sync_jdate(r.payload #> '{employment,contract,start_date}') AS contract_start,
       employes_sync_jdate(r.payload #> '{employment,contract,end_date}') AS contract_end,
       r.payload #>> '{employment,contract,employee_type}' AS employee_type,
       employes_sync_jnum(r.payload #> '{employment,contract,hours_per_week}') AS hours_per_week,
       employes_sync_jnum(r.payload #> '{employment,contract,days_per_week}') AS days_per_week,
       employes_sync_jnum(r.payload #> '{employment,salary,hour_wage}') AS hour_wage,
       employes_sync_jnum(r.payload #> '{employment,salary,month_wage}') AS month_wage,
       employes_sync_jnum(r.payload #> '{employment,salary,yearly_wage}') AS salary_yearly_wage,
       employes_sync_jdate(r.payload #> '{employment,salary,start_date}') AS salary_start,
       employes_sync_jnum(r.payload -> 'yearly_wage') AS yearly_wage,
       r.version,
       r.valid_from AS last_changed_at,
       r.first_session_id AS last_changed_session_id,
       r.payload,
       r.company_id
FROM employes_raw_data r
WHERE r.kind = 'employee' AND r.valid_to IS NULL;

COMMENT ON VIEW employes_current IS
    'The latest state of every employee currently listed by Employes, in readable columns (wrong-typed API values read as NULL); payload holds the full record, company_id its company.';

CREATE OR REPLACE VIEW employes_recent_changes AS
SELECT c.id, c.detected_at, c.effective_date, c.employee_id, n.full_name AS employee_name, c.kind, c.change_type,
       c.field_path, c.old_value, c.new_value, c.session_id, s.source, s.triggered_by, c.company_id
FROM employes_changes c
JOIN employes_sync_sessions s ON s.id = c.session_id
LEFT JOIN LATERAL (
    SELECT concat_ws(' ', nullif(btrim(r.payload ->> 'first_name'), ''), nullif(btrim(r.payload ->> 'surname_prefix'), ''),
                     nullif(btrim(r.payload ->> 'surname'), '')) AS full_name
    FROM employes_raw_data r
    WHERE r.company_id = c.company_id AND r.kind = 'employee' AND r.employee_id = c.employee_id
    ORDER BY r.version DESC
    LIMIT 1
) n ON true
WHERE c.detected_at > now() - interval '30 days'
ORDER BY c.detected_at DESC, c.id;

COMMENT ON VIEW employes_recent_changes IS
    'Changes detected in the last 30 days (by detected_at, not effective date), newest first, with the employee''s name and the session that saw them.';

-- One trigger for every company, or one; the record as of a moment, in a company.
DROP FUNCTION employes_sync_trigger(text, text);
DROP FUNCTION employes_employee_as_of(text, timestamptz);

CREATE FUNCTION employes_sync_trigger(source text DEFAULT 'manual', triggered_by text DEFAULT NULL,
                                      company_id uuid DEFAULT NULL)
RETURNS employes_sync_sessions
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    s employes_sync_sessions;
    who text := employes_sync_trigger.triggered_by;
    src text := employes_sync_trigger.source;
    company uuid := employes_sync_trigger.company_id;
    claims text;
    pid integer;
BEGIN
    IF src IS NULL OR src NOT IN ('manual', 'scheduler', 'api', 'webhook') THEN
        RAISE EXCEPTION 'invalid sync source: %', coalesce(quote_literal(src), 'NULL')
            USING ERRCODE = '22023', HINT = 'source must be one of: manual, scheduler, api, webhook';
    END IF;
    IF who IS NULL THEN
        claims := nullif(current_setting('request.jwt.claims', true), '');
        IF claims IS NOT NULL THEN
            BEGIN
                who := nullif(btrim(claims::jsonb ->> 'email'), '');
            EXCEPTION WHEN invalid_text_representation THEN
                who := NULL;
            END;
        END IF;
        who := coalesce(who, nullif(current_setting('role'), 'none'), session_user::text);
    END IF;
    IF length(who) = 0 OR length(who) > 320 OR who ~ '[[:cntrl:]]' THEN
        RAISE EXCEPTION 'invalid triggered_by: % characters; it must be 1 to 320 characters without control characters', length(who)
            USING ERRCODE = '22023';
    END IF;
    IF company IS NOT NULL THEN
        PERFORM employes_sync_check_company(company, 'sync');
    END IF;
    IF pg_is_in_recovery() THEN
        RAISE EXCEPTION 'cannot start a sync: this server is a read-only standby, and syncs run on the primary'
            USING ERRCODE = '25006',
                  HINT = 'call employes_sync_trigger() on the primary; employes_sync_status(), employes_sync_wait() and the views work here';
    END IF;
    IF current_setting('transaction_read_only')::boolean THEN
        RAISE EXCEPTION 'cannot start a sync in a read-only transaction'
            USING ERRCODE = '25006', HINT = 'over PostgREST, call /rpc/employes_sync_trigger with POST, not GET';
    END IF;

    -- The company of employes_sync.company_id is one of the companies to sync (0.1.0's setup).
    PERFORM employes_sync_register_setting_company();

    -- Fast path: a live session is running, so join it without queueing behind the lock.
    SELECT * INTO s FROM employes_sync_sessions ss
     WHERE ss.status IN ('queued', 'running')
       AND employes_sync_session_stale_reason(ss.status, ss.worker_pid, ss.worker_instance, ss.created_at) IS NULL;
    IF NOT FOUND THEN
        -- Triggers that may start a sync queue up here, so every concurrent caller sees the one
        -- active session (the unique index makes a second one impossible in any case).
        PERFORM pg_advisory_xact_lock('employes_sync_sessions'::regclass::oid::integer, 0);
        PERFORM employes_sync_reap_stale();
        SELECT * INTO s FROM employes_sync_sessions WHERE status IN ('queued', 'running');
    END IF;
    IF FOUND THEN
        INSERT INTO employes_sync_logs (session_id, level, step, message, details)
        VALUES (s.id, 'info', 'trigger', format('%s trigger by %s joined this %s session', src, who, s.status),
                jsonb_build_object('source', src, 'triggered_by', who));
        RAISE NOTICE 'a sync is already %: returning session %', s.status, s.id;
        RETURN s;
    END IF;

    INSERT INTO employes_sync_sessions (source, triggered_by, requested_xid, worker_instance, requested_company)
    VALUES (src, who, pg_current_xact_id(), employes_sync_instance(), company)
    RETURNING * INTO s;
    INSERT INTO employes_sync_logs (session_id, level, step, message, details)
    VALUES (s.id, 'info', 'trigger', format('queued by %s (%s)', who, src), jsonb_build_object('source', src, 'triggered_by', who));

    pid := employes_sync_launch_worker(s.id, s.requested_xid::text);
    IF pid IS NULL THEN
        UPDATE employes_sync_sessions
           SET status = 'error', completed_at = clock_timestamp(), errors = 1,
               error = format('no background worker could be started: all max_worker_processes (%s) slots are in use; raise max_worker_processes or retry later',
                              current_setting('max_worker_processes'))
         WHERE id = s.id
        RETURNING * INTO s;
        INSERT INTO employes_sync_logs (session_id, level, step, message) VALUES (s.id, 'error', 'trigger', s.error);
        RAISE WARNING '%', s.error;
    ELSE
        UPDATE employes_sync_sessions SET worker_pid = pid WHERE id = s.id RETURNING * INTO s;
    END IF;
    RETURN s;
END
$$;
COMMENT ON FUNCTION employes_sync_trigger(text, text, uuid) IS
    'Starts a sync in a background worker and returns its session at once: of every enabled company, or of company_id alone. source: manual, scheduler, api or webhook. triggered_by defaults to the PostgREST JWT email claim, else the role. If a sync is already queued or running, returns that session (with a NOTICE). SQLSTATE 22023 for a bad argument or an unknown or removed company, PT409 for a paused one, 25006 on a standby or in a read-only transaction.';

CREATE FUNCTION employes_employee_as_of(employee_id text, at timestamptz DEFAULT now(), company_id uuid DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    companies uuid[];
    record jsonb;
BEGIN
    IF employee_id IS NULL OR at IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT array_agg(DISTINCT r.company_id) INTO companies
      FROM employes_raw_data r
     WHERE r.kind = 'employee' AND r.employee_id = employes_employee_as_of.employee_id
       AND (employes_employee_as_of.company_id IS NULL OR r.company_id = employes_employee_as_of.company_id);
    IF cardinality(companies) > 1 THEN
        RAISE EXCEPTION 'employee % exists in % companies', employee_id, cardinality(companies)
            USING ERRCODE = '21000', HINT = 'give company_id: employes_employee_as_of(employee_id, at, company_id)';
    END IF;
    SELECT r.payload INTO record
      FROM employes_raw_data r
     WHERE r.company_id = companies[1] AND r.kind = 'employee' AND r.employee_id = employes_employee_as_of.employee_id
       AND r.valid_from <= at AND (r.valid_to IS NULL OR r.valid_to > at);
    RETURN record;
END
$$;
COMMENT ON FUNCTION employes_employee_as_of(text, timestamptz, uuid) IS
    'The employee record as we knew it at that moment; NULL before we first saw the employee or while deleted. company_id may be left out unless the id exists in several companies (SQLSTATE 21000).';

REVOKE ALL ON FUNCTION employes_sync_trigger(text, text, uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION employes_employee_as_of(text, timestamptz, uuid) FROM PUBLIC;

-- The scheduler names the new trigger; the status panel shows each company.
CREATE OR REPLACE FUNCTION employes_sync_schedule(cron text DEFAULT '0 */6 * * *')
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    expr text;
    ext_schema text;
    command text;
    job_id bigint;
BEGIN
    IF employes_sync_schedule.cron IS NULL THEN
        RAISE EXCEPTION 'cron expression must not be NULL' USING ERRCODE = '22023',
            HINT = 'e.g. SELECT employes_sync_schedule(''0 */6 * * *'') for every 6 hours; employes_sync_unschedule() stops the schedule';
    END IF;
    -- Validated (22023 with what is wrong) before pg_cron sees it.
    expr := employes_sync_cron_check(employes_sync_schedule.cron);

    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
        IF current_setting('cron.database_name', true) IS NOT NULL
           AND current_setting('cron.database_name', true) <> current_database() THEN
            RAISE EXCEPTION 'pg_cron is not installed in database %', current_database() USING ERRCODE = '55000',
                DETAIL = format('pg_cron keeps its jobs in the database named by cron.database_name (%s).', current_setting('cron.database_name', true)),
                HINT = format('set cron.database_name = %L in postgresql.conf and restart, then CREATE EXTENSION pg_cron', current_database());
        END IF;
        RAISE EXCEPTION 'pg_cron is not installed in this database: scheduling needs it' USING ERRCODE = '55000',
            HINT = 'add pg_cron to shared_preload_libraries, restart, then CREATE EXTENSION pg_cron';
    END IF;

    SELECT pronamespace::regnamespace::text INTO ext_schema
      FROM pg_proc WHERE oid = 'employes_sync_trigger(text, text, uuid)'::regprocedure;
    -- Schema-qualified: pg_cron runs the command with the default search_path.
    command := format('SELECT %s.employes_sync_trigger(%L, %L)', ext_schema, 'scheduler', 'system');

    -- pg_cron 1.4: a job with the same name (and owner) is replaced, keeping its jobid.
    EXECUTE 'SELECT cron.schedule($1, $2, $3)' INTO job_id USING 'employes-sync', expr, command;
    RAISE NOTICE 'employes-sync scheduled (job %): %, next run at % UTC', job_id, employes_sync_cron_describe(expr),
        to_char(employes_sync_cron_next(expr, clock_timestamp()) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI');
    RETURN employes_sync_scheduler_status();
END
$$;
COMMENT ON FUNCTION employes_sync_schedule(text) IS
    'Creates or replaces the pg_cron job ''employes-sync'' (in this database) that runs employes_sync_trigger(''scheduler'', ''system''); the cron expression (5 fields, UTC) is validated first (SQLSTATE 22023). Returns employes_sync_scheduler_status(). Needs pg_cron (SQLSTATE 55000 otherwise).';

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
      FROM pg_proc WHERE oid = 'employes_sync_trigger(text, text, uuid)'::regprocedure;
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

-- Reads only: PostgREST runs GET /rpc/employes_sync_status in a read-only transaction, and a
-- standby is read-only too. A session whose worker is gone is reported as the error it is; the
-- watchdog and the next trigger or wait record it.
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
        'companies', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                          'company_id', c.company_id, 'name', c.name, 'enabled', c.enabled,
                          'has_own_token', c.has_own_token,
                          'employees_synced', (SELECT count(*) FROM employes_raw_data r
                                                WHERE r.company_id = c.company_id AND r.kind = 'employee' AND r.valid_to IS NULL),
                          'last_session_id', c.last_session_id, 'last_status', c.last_status,
                          'last_completed_at', c.last_completed_at,
                          'last_error', employes_sync_mask_settings(c.last_error),
                          -- counts and progress of its last (or running) sync
                          'last_counts', (SELECT jsonb_build_object(
                                               'pages_done', sc.pages_done, 'pages_total', sc.pages_total,
                                               'employees_done', sc.employees_done, 'employees_total', sc.employees_total,
                                               'api_requests', sc.api_requests, 'retries', sc.retries,
                                               'versions_written', sc.versions_written,
                                               'changes_detected', sc.changes_detected,
                                               'employees_deleted', sc.employees_deleted, 'list_moved', sc.list_moved,
                                               'records_rejected', sc.records_rejected, 'errors', sc.errors)
                                            FROM employes_sync_session_companies sc
                                           WHERE sc.session_id = c.last_session_id AND sc.company_id = c.company_id))
                          ORDER BY c.added_at, c.company_id), '[]'::jsonb)
                        FROM employes_sync_companies c WHERE NOT c.removed),
        'employees_synced', (SELECT count(*) FROM employes_raw_data WHERE kind = 'employee' AND valid_to IS NULL),
        'changes_24h', (SELECT count(*) FROM employes_changes WHERE detected_at > clock_timestamp() - interval '24 hours'),
        'scheduler', scheduler);
END
$$;
COMMENT ON FUNCTION employes_sync_status() IS
    'Everything a "Sync now" panel shows, as jsonb: state (never, syncing, current, outdated = last completed sync older than the schedule''s interval or 6 hours when unscheduled, error = the last sync that ran to an end failed or was partial), standby, last_session (worker_gone: ended because its worker is gone, not yet recorded), last_success_at, running_session with progress_percent, companies (each with its last or running sync''s status, error, counts and progress), employees_synced, changes_24h, scheduler (employes_sync_scheduler_status()). Reads only: works in a read-only transaction and on a standby.';

-- ---------------------------------------------------------------------------------------
-- The companies (Employes administrations) a database syncs. One trigger syncs every enabled
-- company, one after the other; each keeps its own history (company_id on every history row),
-- and deletions are inferred per company, from that company's complete list only. A company
-- may have a token of its own; else the setting employes_sync.api_token is used. The company of
-- the setting employes_sync.company_id (the single-company setup of 0.1.0) is one of them: the
-- trigger adds it when it is missing, so changing the setting adds a company and never makes
-- the first one's employees look deleted.

CREATE TABLE employes_sync_company_settings (
    company_id uuid PRIMARY KEY,
    name       text CHECK (name IS NULL OR (length(name) BETWEEN 1 AND 200 AND name !~ '[[:cntrl:]]')),
    enabled    boolean NOT NULL DEFAULT true,
    added_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    added_by   text NOT NULL,
    removed_at timestamptz,
    CONSTRAINT employes_sync_company_settings_removed_is_disabled CHECK (removed_at IS NULL OR NOT enabled)
);
SELECT pg_extension_config_dump('employes_sync_company_settings', '');
COMMENT ON TABLE employes_sync_company_settings IS
    'The companies to sync: enabled ones are synced by every trigger; a removed one keeps its history and is never synced again (until added again). Managed with employes_sync_add_company, _remove_company, _pause_company, _resume_company; read through the view employes_sync_companies.';

-- The companies' own tokens, apart: no role but a superuser can read this table, and it is
-- deliberately not registered with pg_extension_config_dump, so pg_dump never writes a token
-- out (a restored database needs its tokens set again, as it needs employes_sync.api_token).
CREATE TABLE employes_sync_company_tokens (
    company_id uuid PRIMARY KEY REFERENCES employes_sync_company_settings (company_id) ON DELETE CASCADE,
    api_token  text NOT NULL CHECK (length(api_token) BETWEEN 8 AND 4096 AND api_token !~ '[[:cntrl:][:space:]]'),
    set_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);
COMMENT ON TABLE employes_sync_company_tokens IS
    'A company''s own Employes API token (else employes_sync.api_token is used). Superuser-only, never returned by a function, never in a dump: set it again after a restore.';

-- Raises a clear error unless the company can be synced (or managed): 22023 for none or a
-- removed one, PT409 for a paused one when it is to be synced.
CREATE FUNCTION employes_sync_check_company(company uuid, purpose text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    c employes_sync_company_settings;
BEGIN
    SELECT * INTO c FROM employes_sync_company_settings s WHERE s.company_id = company;
    IF NOT FOUND AND company::text = btrim(coalesce(current_setting('employes_sync.company_id', true), '')) THEN
        RETURN; -- the setting's company, added by the trigger
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no company %', company USING ERRCODE = '22023',
            HINT = 'employes_sync_add_company(company_id, name, api_token) adds one; employes_sync_companies lists them';
    END IF;
    IF c.removed_at IS NOT NULL THEN
        RAISE EXCEPTION 'company % was removed at %', company, c.removed_at USING ERRCODE = '22023',
            HINT = 'employes_sync_add_company() adds it again; its history was kept';
    END IF;
    IF purpose = 'sync' AND NOT c.enabled THEN
        RAISE EXCEPTION 'company % is paused', company USING ERRCODE = 'PT409',
            HINT = 'employes_sync_resume_company() resumes it';
    END IF;
END
$$;
COMMENT ON FUNCTION employes_sync_check_company(uuid, text) IS
    'Internal: raises 22023 for an unknown or removed company, and PT409 for a paused one that is to be synced.';

-- The company of the setting employes_sync.company_id is synced like any added one: added the
-- first time a trigger sees it (by nobody's call: its name says where it came from).
CREATE FUNCTION employes_sync_register_setting_company()
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    setting text := nullif(btrim(coalesce(current_setting('employes_sync.company_id', true), '')), '');
BEGIN
    IF setting IS NULL OR pg_is_in_recovery() OR current_setting('transaction_read_only')::boolean THEN
        RETURN;
    END IF;
    INSERT INTO employes_sync_company_settings (company_id, added_by)
    VALUES (setting::uuid, 'employes_sync.company_id')
    ON CONFLICT (company_id) DO NOTHING;
END
$$;
COMMENT ON FUNCTION employes_sync_register_setting_company() IS
    'Internal: adds the company of employes_sync.company_id to the companies to sync, if it is not there (a removed one stays removed).';

-- Who calls: the PostgREST JWT email claim, else the role.
CREATE FUNCTION employes_sync_caller()
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    who text;
BEGIN
    BEGIN
        who := nullif(btrim(nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'email'), '');
    EXCEPTION WHEN invalid_text_representation THEN
        who := NULL;
    END;
    RETURN left(coalesce(who, nullif(current_setting('role'), 'none'), session_user::text), 320);
END
$$;
COMMENT ON FUNCTION employes_sync_caller() IS
    'Internal: who calls, for the record: the PostgREST JWT email claim, else the role, else the session user.';

-- A company's own token: checked, stored apart, never echoed (the message names its length).
CREATE FUNCTION employes_sync_store_token(company uuid, api_token text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
BEGIN
    IF api_token IS NULL THEN
        DELETE FROM employes_sync_company_tokens t WHERE t.company_id = company;
        RETURN;
    END IF;
    IF length(api_token) NOT BETWEEN 8 AND 4096 OR api_token ~ '[[:cntrl:][:space:]]' THEN
        RAISE EXCEPTION 'invalid api_token: % characters; a token is 8 to 4096 characters without spaces or control characters', length(api_token)
            USING ERRCODE = '22023';
    END IF;
    INSERT INTO employes_sync_company_tokens (company_id, api_token) VALUES (company, api_token)
    ON CONFLICT (company_id) DO UPDATE SET api_token = excluded.api_token, set_at = excluded.set_at;
END
$$;
COMMENT ON FUNCTION employes_sync_store_token(uuid, text) IS
    'Internal: stores (or with NULL removes) a company''s own token; 22023 for a malformed one, without echoing it.';

-- Nothing about a company is being written while its sync runs.
CREATE FUNCTION employes_sync_refuse_while_syncing(company uuid, what text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    s uuid;
BEGIN
    SELECT ss.id INTO s FROM employes_sync_sessions ss
     WHERE ss.status IN ('queued', 'running')
       AND (ss.requested_company IS NULL OR ss.requested_company = company)
       AND employes_sync_session_stale_reason(ss.status, ss.worker_pid, ss.worker_instance, ss.created_at) IS NULL;
    IF FOUND THEN
        RAISE EXCEPTION 'cannot % company % while session % syncs it', what, company, s USING ERRCODE = 'PT409',
            HINT = 'wait for the session to end (employes_sync_wait) or cancel it (employes_sync_cancel), then try again';
    END IF;
END
$$;
COMMENT ON FUNCTION employes_sync_refuse_while_syncing(uuid, text) IS
    'Internal: PT409 when a queued or running session syncs this company.';

CREATE VIEW employes_sync_companies AS
SELECT c.company_id,
       c.name,
       c.enabled,
       c.removed_at IS NOT NULL AS removed,
       EXISTS (SELECT 1 FROM employes_sync_company_tokens t WHERE t.company_id = c.company_id) AS has_own_token,
       c.added_at,
       c.added_by,
       c.removed_at,
       l.session_id AS last_session_id,
       l.status AS last_status,
       l.started_at AS last_started_at,
       l.completed_at AS last_completed_at,
       l.error AS last_error
FROM employes_sync_company_settings c
LEFT JOIN LATERAL (
    SELECT sc.session_id, sc.status, sc.started_at, sc.completed_at, sc.error
      FROM employes_sync_session_companies sc
     WHERE sc.company_id = c.company_id
     ORDER BY sc.started_at DESC
     LIMIT 1
) l ON true;
COMMENT ON VIEW employes_sync_companies IS
    'The companies to sync: enabled, removed, whether they have a token of their own (never the token), and their last sync (session, status, times, error).';

CREATE FUNCTION employes_sync_add_company(company_id uuid, name text DEFAULT NULL, api_token text DEFAULT NULL)
RETURNS employes_sync_companies
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    company uuid := employes_sync_add_company.company_id;
    existing employes_sync_company_settings;
    out employes_sync_companies;
BEGIN
    IF company IS NULL THEN
        RAISE EXCEPTION 'company_id must not be NULL' USING ERRCODE = '22023',
            HINT = 'the Employes company (administration) UUID, e.g. 5f1c6a4e-1c1f-4b8e-9a53-2b7d3f0e9a11';
    END IF;
    SELECT * INTO existing FROM employes_sync_company_settings c WHERE c.company_id = company FOR UPDATE;
    IF FOUND AND existing.removed_at IS NULL THEN
        RAISE EXCEPTION 'company % is already added', company USING ERRCODE = '23505',
            HINT = 'employes_sync_set_company_token() changes its token; employes_sync_resume_company() resumes a paused one';
    END IF;
    IF FOUND THEN
        -- Added again after a removal: the same history goes on.
        UPDATE employes_sync_company_settings c
           SET enabled = true, removed_at = NULL, name = coalesce(employes_sync_add_company.name, c.name),
               added_at = clock_timestamp(), added_by = employes_sync_caller()
         WHERE c.company_id = company;
    ELSE
        INSERT INTO employes_sync_company_settings (company_id, name, added_by)
        VALUES (company, employes_sync_add_company.name, employes_sync_caller());
    END IF;
    PERFORM employes_sync_store_token(company, api_token);
    SELECT * INTO out FROM employes_sync_companies v WHERE v.company_id = company;
    RETURN out;
END
$$;
COMMENT ON FUNCTION employes_sync_add_company(uuid, text, text) IS
    'Adds a company to sync (or adds a removed one again, its history kept), with an optional name and token of its own (else employes_sync.api_token). SQLSTATE 22023 for NULL or a malformed token, 23505 when it is already added.';

CREATE FUNCTION employes_sync_remove_company(company_id uuid)
RETURNS employes_sync_companies
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    company uuid := employes_sync_remove_company.company_id;
    out employes_sync_companies;
BEGIN
    IF company IS NULL THEN
        RAISE EXCEPTION 'company_id must not be NULL' USING ERRCODE = '22023';
    END IF;
    PERFORM employes_sync_check_company(company, 'remove');
    PERFORM 1 FROM employes_sync_company_settings c WHERE c.company_id = company FOR UPDATE;
    PERFORM employes_sync_refuse_while_syncing(company, 'remove');
    UPDATE employes_sync_company_settings c SET enabled = false, removed_at = clock_timestamp()
     WHERE c.company_id = company;
    PERFORM employes_sync_store_token(company, NULL);
    SELECT * INTO out FROM employes_sync_companies v WHERE v.company_id = company;
    RETURN out;
END
$$;
COMMENT ON FUNCTION employes_sync_remove_company(uuid) IS
    'Stops syncing a company and forgets its token; its history is kept and nobody is recorded as deleted. SQLSTATE 22023 for NULL, an unknown or an already removed company, PT409 while a session syncs it.';

CREATE FUNCTION employes_sync_pause_company(company_id uuid)
RETURNS employes_sync_companies
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    out employes_sync_companies;
BEGIN
    IF employes_sync_pause_company.company_id IS NULL THEN
        RAISE EXCEPTION 'company_id must not be NULL' USING ERRCODE = '22023';
    END IF;
    PERFORM employes_sync_check_company(employes_sync_pause_company.company_id, 'pause');
    UPDATE employes_sync_company_settings c SET enabled = false
     WHERE c.company_id = employes_sync_pause_company.company_id;
    SELECT * INTO out FROM employes_sync_companies v WHERE v.company_id = employes_sync_pause_company.company_id;
    RETURN out;
END
$$;
COMMENT ON FUNCTION employes_sync_pause_company(uuid) IS
    'Pauses a company: triggers skip it until employes_sync_resume_company(); nothing of it changes. SQLSTATE 22023 for NULL, an unknown or a removed company.';

CREATE FUNCTION employes_sync_resume_company(company_id uuid)
RETURNS employes_sync_companies
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    out employes_sync_companies;
BEGIN
    IF employes_sync_resume_company.company_id IS NULL THEN
        RAISE EXCEPTION 'company_id must not be NULL' USING ERRCODE = '22023';
    END IF;
    PERFORM employes_sync_check_company(employes_sync_resume_company.company_id, 'resume');
    UPDATE employes_sync_company_settings c SET enabled = true
     WHERE c.company_id = employes_sync_resume_company.company_id;
    SELECT * INTO out FROM employes_sync_companies v WHERE v.company_id = employes_sync_resume_company.company_id;
    RETURN out;
END
$$;
COMMENT ON FUNCTION employes_sync_resume_company(uuid) IS
    'Resumes a paused company. SQLSTATE 22023 for NULL, an unknown or a removed company.';

CREATE FUNCTION employes_sync_set_company_token(company_id uuid, api_token text)
RETURNS employes_sync_companies
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    out employes_sync_companies;
BEGIN
    IF employes_sync_set_company_token.company_id IS NULL THEN
        RAISE EXCEPTION 'company_id must not be NULL' USING ERRCODE = '22023';
    END IF;
    PERFORM employes_sync_check_company(employes_sync_set_company_token.company_id, 'set the token of');
    PERFORM employes_sync_store_token(employes_sync_set_company_token.company_id, api_token);
    SELECT * INTO out FROM employes_sync_companies v WHERE v.company_id = employes_sync_set_company_token.company_id;
    RETURN out;
END
$$;
COMMENT ON FUNCTION employes_sync_set_company_token(uuid, text) IS
    'Sets a company''s own token, or with NULL goes back to employes_sync.api_token; the token is never returned. SQLSTATE 22023 for NULL, an unknown or removed company, or a malformed token.';

-- Nothing for PUBLIC: only an admin manages companies (a token is a secret, and a company id
-- decides what is fetched with it).
REVOKE ALL ON employes_sync_company_settings, employes_sync_company_tokens, employes_sync_companies FROM PUBLIC;
REVOKE ALL ON FUNCTION employes_sync_check_company(uuid, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION employes_sync_register_setting_company() FROM PUBLIC;
REVOKE ALL ON FUNCTION employes_sync_caller() FROM PUBLIC;
REVOKE ALL ON FUNCTION employes_sync_store_token(uuid, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION employes_sync_refuse_while_syncing(uuid, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION employes_sync_add_company(uuid, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION employes_sync_remove_company(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION employes_sync_pause_company(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION employes_sync_resume_company(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION employes_sync_set_company_token(uuid, text) FROM PUBLIC;

-- The configured company is one of the companies to sync (added when it was first synced).
INSERT INTO employes_sync_company_settings (company_id, added_by, added_at)
SELECT current_setting('employes_sync_upgrade.company')::uuid, 'employes_sync.company_id',
       coalesce((SELECT min(s.created_at) FROM employes_sync_sessions s), clock_timestamp())
 WHERE current_setting('employes_sync_upgrade.company') <> '';

-- As at install: what default privileges handed Supabase's roles on the new objects is taken
-- back; then the grants the replaced functions had are given again. Those are the database's
-- own, not the extension's: pg_init_privs keeps the extension's (owner only), so pg_dump goes
-- on writing the grants and a restore keeps them.
DO $$
DECLARE
    target text;
    grantee text;
    fn record;
    item record;
    own aclitem[];
BEGIN
    FOREACH target IN ARRAY ARRAY[
        'FUNCTION employes_timeline_change_events(uuid, text[])', 'FUNCTION employes_timeline_events(uuid, text[])',
        'FUNCTION employes_timeline_refresh(text[], uuid)',
        'FUNCTION employes_timeline_apply(uuid, text[], text[], text[], text[], date[], text[], text[], text[], text[], text[], text[])',
        'FUNCTION employes_sync_trigger(text, text, uuid)', 'FUNCTION employes_employee_as_of(text, timestamptz, uuid)',
        'FUNCTION employes_sync_check_company(uuid, text)', 'FUNCTION employes_sync_register_setting_company()',
        'FUNCTION employes_sync_caller()', 'FUNCTION employes_sync_store_token(uuid, text)',
        'FUNCTION employes_sync_refuse_while_syncing(uuid, text)', 'FUNCTION employes_sync_add_company(uuid, text, text)',
        'FUNCTION employes_sync_remove_company(uuid)', 'FUNCTION employes_sync_pause_company(uuid)',
        'FUNCTION employes_sync_resume_company(uuid)', 'FUNCTION employes_sync_set_company_token(uuid, text)',
        'TABLE employes_sync_session_companies', 'TABLE employes_sync_company_settings',
        'TABLE employes_sync_company_tokens', 'TABLE employes_sync_companies']
    LOOP
        EXECUTE format('REVOKE ALL ON %s FROM PUBLIC', target);
        FOR grantee IN SELECT rolname FROM pg_roles WHERE rolname IN ('anon', 'authenticated', 'service_role') LOOP
            EXECUTE format('REVOKE ALL ON %s FROM %I', target, grantee);
        END LOOP;
    END LOOP;

    FOR fn IN SELECT key::regprocedure AS oid, value::aclitem[] AS acl
                FROM jsonb_each_text(current_setting('employes_sync_upgrade.acl')::jsonb) LOOP
        SELECT p.proacl INTO own FROM pg_proc p WHERE p.oid = fn.oid;
        FOR item IN SELECT a.grantee, a.is_grantable FROM aclexplode(fn.acl) a
                     WHERE a.privilege_type = 'EXECUTE'
                       AND a.grantee <> (SELECT p.proowner FROM pg_proc p WHERE p.oid = fn.oid) LOOP
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %s%s', fn.oid::regprocedure,
                           CASE WHEN item.grantee = 0 THEN 'PUBLIC' ELSE item.grantee::regrole::text END,
                           CASE WHEN item.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
        END LOOP;
        UPDATE pg_catalog.pg_init_privs ip SET initprivs = own
         WHERE ip.objoid = fn.oid AND ip.classoid = 'pg_proc'::regclass AND ip.objsubid = 0;
    END LOOP;
END
$$;
