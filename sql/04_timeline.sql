-- Safe readers of API values: wrong types or malformed dates give NULL, never an error that
-- would break a view for everyone.

-- employes_sync_jdate(jsonb) is in Rust (src/api.rs).
COMMENT ON FUNCTION employes_sync_jdate(jsonb) IS 'An Employes date (YYYY-MM-DDT00:00:00) as a date; NULL for null, the 0001-01-01 sentinel, impossible dates (2025-02-30) or anything malformed.';

CREATE FUNCTION employes_sync_jnum(v jsonb) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN jsonb_typeof(v) = 'number' THEN (v #>> '{}')::numeric END;
COMMENT ON FUNCTION employes_sync_jnum(jsonb) IS 'A JSON number as numeric; NULL for anything else.';
-- A payload gives a handful of events, not the 1,000 rows PostgreSQL assumes for a set-returning
-- function: estimates a thousand times too large skewed every plan that calls it.
ALTER FUNCTION employes_sync_employment_events(text) ROWS 8;
COMMENT ON FUNCTION employes_sync_employment_events(text) IS
    'The timeline events (hired, rehired, terminated, contract started/renewed/ended, salary and hours changed) of one /employments payload given as text; details copy its values as written, old_wage/new_wage are the wages a salary event compares.';

-- One row per event in an employee's working life: from the history periods of the latest
-- /employments version and from detected changes. Maintained incrementally, in the same
-- transaction as the versions it derives from, so the timeline is never behind the data and its
-- cost follows the changes, not the size of the company (a full REFRESH of a materialized view
-- took 47 s at 100,000 employees for a 1% change; see bench/README.md): a sync that writes an
-- /employments version writes the difference between the old and the new payload's events
-- (employes_timeline_apply), and recomputes the employees whose status changed
-- (employes_timeline_refresh).
CREATE TABLE employes_timeline (
    employee_id text COLLATE "C" NOT NULL,
    event_date  date NOT NULL,
    event_type  text COLLATE "C" NOT NULL,
    title       text NOT NULL,
    details     jsonb NOT NULL,
    event_key   text COLLATE "C" NOT NULL,
    company_id  uuid NOT NULL
);
SELECT pg_extension_config_dump('employes_timeline', '');

-- Employment events (hired to hours changed) come from employes_sync_employment_events, in Rust
-- (src/api.rs, rules in core/src/timeline.rs): it reads each payload's text once and copies
-- values into details as written. Wage arithmetic stays in numeric here. Status changes,
-- leaving and coming back come from detected changes.

-- The details of an employment event as stored: the event's own (values as the payload writes
-- them) and, for a salary change, amount and percent computed in numeric from the two wages.
-- Inlined where it is called: STABLE, as jsonb_build_object is (PostgreSQL does not inline an
-- IMMUTABLE function whose body is not, and a call per event costs several times the expression).
CREATE FUNCTION employes_timeline_details(event_type text, details text, old_wage text, new_wage text)
RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE
RETURN CASE WHEN event_type = 'salary_changed'
            THEN details::jsonb || jsonb_build_object(
                     'amount', new_wage::numeric - old_wage::numeric,
                     'percent', CASE WHEN old_wage::numeric > 0
                                     THEN round((new_wage::numeric - old_wage::numeric) / old_wage::numeric * 100, 2) END)
            ELSE details::jsonb END;
COMMENT ON FUNCTION employes_timeline_details(text, text, text, text) IS
    'The details jsonb of an employment event: its details text, plus amount and percent (numeric) for salary_changed.';

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

-- The only index: it finds an employee's events (a handful, sorted by date in no time) and is the
-- upsert's arbiter. A second index on (employee_id, event_date) cost each new event another
-- insertion into a random leaf page and answered nothing this one does not.
CREATE UNIQUE INDEX employes_timeline_key ON employes_timeline (company_id, employee_id, event_type, event_key);

COMMENT ON COLUMN employes_timeline.company_id IS 'The Employes company of the employee.';
COMMENT ON TABLE employes_timeline IS
    'Events of each employee''s working life: hired, rehired, contract started/renewed/ended, salary changed (old, new, amount, percent), hours changed, terminated (from history periods) and status changed, left, restored (from detected changes). Maintained by each sync for the employees it changed (employes_timeline_refresh rebuilds it).';
