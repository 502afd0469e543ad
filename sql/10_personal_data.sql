-- Personal data under control: every table behind row level security, views that read with
-- the caller's rights, erasure of former employees (by hand or after a retention period),
-- superseded payloads dropped after a retention period, and the token's expiry watched.

-- Row level security on every table of the extension: a role granted SELECT sees only the rows
-- a policy lets through, and none without one (docs/supabase-grants.sql writes the policies of
-- an HR panel). The sync's workers and the SECURITY DEFINER functions run as a superuser or the
-- tables' owner, which it does not restrict. pg_dump does not carry the policies of an
-- extension's tables, only their grants: after a restore the tables are closed, not open, until
-- the policy script runs again.
ALTER TABLE employes_sync_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE employes_sync_session_companies ENABLE ROW LEVEL SECURITY;
ALTER TABLE employes_sync_logs ENABLE ROW LEVEL SECURITY;
ALTER TABLE employes_raw_data ENABLE ROW LEVEL SECURITY;
ALTER TABLE employes_changes ENABLE ROW LEVEL SECURITY;
ALTER TABLE employes_timeline ENABLE ROW LEVEL SECURITY;
ALTER TABLE employes_sync_company_settings ENABLE ROW LEVEL SECURITY;
ALTER TABLE employes_sync_company_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE employes_webhook_subscriptions ENABLE ROW LEVEL SECURITY;
ALTER TABLE employes_webhook_deliveries ENABLE ROW LEVEL SECURITY;
-- (employes_events has had it from its creation.)

-- The views of personal data read with the caller's rights, under the tables' row level
-- security (PostgreSQL 15's security_invoker): a view never shows what its tables would not.
ALTER VIEW employes_current SET (security_invoker = true);
ALTER VIEW employes_recent_changes SET (security_invoker = true);

-- The key of the erasure tags: 32 random bytes, made at the first erasure (a row made by
-- CREATE EXTENSION would clash with the dumped one on restore).
CREATE TABLE employes_erasure_key (
    one_row boolean PRIMARY KEY DEFAULT true CHECK (one_row),
    key     bytea NOT NULL CHECK (length(key) = 32)
);
SELECT pg_extension_config_dump('employes_erasure_key', '');
ALTER TABLE employes_erasure_key ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE employes_erasure_key IS
    'The random key of the erasure tags (employes_erasures.tag): made at the first erasure, dumped with the database so that a restored one keeps recognising erased employees.';

-- One row per employee forgotten: when, by whom, why, how many rows; never who.
CREATE TABLE employes_erasures (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    erased_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    erased_by       text NOT NULL,
    how             text NOT NULL CHECK (how IN ('manual', 'retention')),
    reason          text CHECK (length(reason) <= 500),
    company_id      uuid NOT NULL,
    rows_removed    jsonb NOT NULL,
    -- employes_sync_erasure_tag(company_id, employee_id): lets a sync recognise the employee
    -- if the API lists them again; NULL once employes_unforget_employee let them back.
    tag             bytea CHECK (length(tag) = 32),
    unforgotten_at  timestamptz,
    unforgotten_by  text,
    CONSTRAINT employes_erasures_tag_or_unforgotten CHECK ((tag IS NULL) = (unforgotten_at IS NOT NULL))
);
SELECT pg_extension_config_dump('employes_erasures', '');
SELECT pg_extension_config_dump('employes_erasures_id_seq', '');
ALTER TABLE employes_erasures ENABLE ROW LEVEL SECURITY;
CREATE UNIQUE INDEX employes_erasures_tag ON employes_erasures (company_id, tag) WHERE tag IS NOT NULL;
COMMENT ON TABLE employes_erasures IS
    'One row per employee forgotten (employes_forget_employee, or the watchdog after employes_sync.former_employee_retention_days): when, by whom, how (manual, retention), why, and how many rows were removed or redacted; never who. tag lets a later sync recognise the employee without naming them.';
COMMENT ON COLUMN employes_erasures.rows_removed IS
    'raw_versions, changes, timeline_events, events, webhook_deliveries (pending_deliveries of them not yet delivered) removed; log_lines, sessions and sync_events redacted (the employee id replaced by [erased]).';
COMMENT ON COLUMN employes_erasures.tag IS
    'SHA-256 of the random employes_erasure_key and company/employee id: a sync that finds the id listed again skips it. NULL once unforgotten.';

-- The tag of an employee (core/src/erasure.rs computes the same in the worker).
CREATE FUNCTION employes_sync_erasure_tag(company uuid, employee_id text)
RETURNS bytea
LANGUAGE sql STABLE
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
    SELECT sha256(k.key || convert_to(company::text || '/' || employee_id, 'UTF8')) FROM employes_erasure_key k
$$;
COMMENT ON FUNCTION employes_sync_erasure_tag(uuid, text) IS
    'Internal: the erasure tag of an employee of a company (SHA-256 of the erasure key and company/employee id); NULL before the first erasure.';

-- Every place an employee id occurs in text, as a whole id (not inside a longer one, a number or
-- a uuid), replaced by [erased]. Ids are letters, digits and - _ . ~ (what a sync accepts); a
-- dot after one ends a sentence when no id character follows it. Messages are cut at 500
-- characters with an ellipsis (core/src/text.rs): an id cut there (4 characters of it or more)
-- is replaced too.
CREATE FUNCTION employes_sync_redact(t text, ids text[])
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    i text;
    n integer;
BEGIN
    FOREACH i IN ARRAY ids LOOP
        IF strpos(t, i) > 0 THEN
            t := regexp_replace(t, '(^|[^A-Za-z0-9_.~-])' || replace(i, '.', '\.') || '(?=$|[^A-Za-z0-9_.~-]|\.($|[^A-Za-z0-9_~-]))',
                                '\1[erased]', 'g');
        END IF;
        IF right(t, 1) = '…' THEN
            FOR n IN REVERSE length(i) - 1 .. 4 LOOP
                IF right(t, n + 1) = left(i, n) || '…'
                   AND (length(t) = n + 1 OR substr(t, length(t) - n - 1, 1) !~ '[A-Za-z0-9_.~-]') THEN
                    t := left(t, length(t) - n - 1) || '[erased]…';
                    EXIT;
                END IF;
            END LOOP;
        END IF;
    END LOOP;
    RETURN t;
END
$$;
COMMENT ON FUNCTION employes_sync_redact(text, text[]) IS
    'Internal: the text with every whole occurrence of the given employee ids replaced by [erased].';

-- The same inside the string values of a jsonb document (numbers, keys and structure unchanged).
CREATE FUNCTION employes_sync_redact(j jsonb, ids text[])
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
BEGIN
    RETURN CASE jsonb_typeof(j)
        WHEN 'string' THEN to_jsonb(employes_sync_redact(j #>> '{}', ids))
        WHEN 'object' THEN (SELECT coalesce(jsonb_object_agg(e.key, employes_sync_redact(e.value, ids)), '{}'::jsonb)
                              FROM jsonb_each(j) e)
        WHEN 'array' THEN (SELECT coalesce(jsonb_agg(employes_sync_redact(e.value, ids) ORDER BY e.n), '[]'::jsonb)
                             FROM jsonb_array_elements(j) WITH ORDINALITY e (value, n))
        ELSE j END;
END
$$;
COMMENT ON FUNCTION employes_sync_redact(jsonb, text[]) IS
    'Internal: the jsonb document with every whole occurrence of the given employee ids in its string values replaced by [erased].';

-- Former employees: no longer listed by Employes, or listed as "out of service". left_on is the
-- end date of their employment when the record gives one, else the day they stopped being
-- listed (or the day their last record, the one "out of service", was first seen).
CREATE VIEW employes_former_employees WITH (security_invoker = true) AS
SELECT r.company_id,
       r.employee_id,
       concat_ws(' ', nullif(btrim(r.payload ->> 'first_name'), ''), nullif(btrim(r.payload ->> 'surname_prefix'), ''),
                 nullif(btrim(r.payload ->> 'surname'), '')) AS full_name,
       r.payload ->> 'status' AS status,
       r.valid_to IS NULL AS listed,
       coalesce(employes_sync_jdate(r.payload #> '{employment,end_date}'),
                (coalesce(r.valid_to, r.valid_from) AT TIME ZONE 'UTC')::date) AS left_on
  FROM (SELECT DISTINCT ON (x.company_id, x.employee_id) x.*
          FROM employes_raw_data x
         WHERE x.kind = 'employee'
         ORDER BY x.company_id, x.employee_id, x.version DESC) r
 WHERE r.valid_to IS NOT NULL OR r.payload ->> 'status' = 'out of service';
COMMENT ON VIEW employes_former_employees IS
    'Employees who can be forgotten (employes_forget_employee): no longer listed by Employes, or listed as "out of service"; left_on is their employment''s end date, else the day they stopped being listed (or their last record was first seen). Reads with the caller''s rights.';

-- Whether the history tables carry nothing of the user's: no trigger or rule that fires in origin
-- or replica mode, no foreign key on them or pointing at them but the extension's. Then a
-- statement that checks its own references may run with the per-row foreign-key triggers off
-- (session_replication_role = replica, as a logical replication apply worker runs) and skip
-- nothing anyone else put there: the sync's history writes (src/worker/references.rs) and an
-- erasure's deletes do. Asked with the history tables locked (ROW EXCLUSIVE), so none can be
-- added before the transaction ends.
CREATE FUNCTION employes_sync_history_is_ours()
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
    SELECT has_parameter_privilege('session_replication_role', 'SET')
       AND NOT EXISTS (SELECT 1 FROM pg_trigger
                        WHERE tgrelid IN ('employes_raw_data'::regclass, 'employes_changes'::regclass)
                          AND NOT tgisinternal AND tgenabled IN ('O', 'R'))
       AND NOT EXISTS (SELECT 1 FROM pg_rewrite
                        WHERE ev_class IN ('employes_raw_data'::regclass, 'employes_changes'::regclass)
                          AND ev_enabled IN ('O', 'R'))
       AND NOT EXISTS (SELECT 1 FROM pg_constraint
                        WHERE contype = 'f'
                          AND (conrelid IN ('employes_raw_data'::regclass, 'employes_changes'::regclass)
                               OR confrelid IN ('employes_raw_data'::regclass, 'employes_changes'::regclass))
                          AND conname <> ALL (ARRAY['employes_raw_data_first_session_id_fkey',
                                                    'employes_raw_data_closed_session_id_fkey',
                                                    'employes_changes_session_id_fkey', 'employes_changes_raw_from_id_fkey',
                                                    'employes_changes_raw_to_id_fkey']))
$$;
COMMENT ON FUNCTION employes_sync_history_is_ours() IS
    'Internal: whether no trigger, rule or foreign key of the user''s is on (or points at) employes_raw_data and employes_changes, so that a statement that checks its references itself may skip the per-row foreign-key triggers.';

-- Removes every row of these employees of a company (all their versions, changes, timeline,
-- events and those events' deliveries), redacts their id where text mentions it (logs, session
-- errors, sync events), and records one erasure per employee. The caller has checked them and
-- holds the session lock (no sync of the company runs, none can start).
CREATE FUNCTION employes_sync_forget(company uuid, ids text[], reason text, erased_by text, how text)
RETURNS SETOF employes_erasures
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    deliveries jsonb;
    events jsonb;
    timeline jsonb;
    changes jsonb;
    raw jsonb;
    logs integer;
    sessions integer;
    sync_events integer;
    rec employes_erasures;
    versions bigint[];
    set_wise boolean;
    role text := current_setting('session_replication_role');
BEGIN
    INSERT INTO employes_erasure_key (key) VALUES (uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()))
    ON CONFLICT DO NOTHING;
    -- The webhook worker queues no delivery of an event about to go (it waits for this commit,
    -- then no longer sees the event).
    LOCK TABLE employes_webhook_deliveries IN SHARE ROW EXCLUSIVE MODE;
    -- Event writers hold this lock: ids keep being handed out in commit order.
    PERFORM employes_events_lock();
    WITH d AS (
        DELETE FROM employes_webhook_deliveries d USING employes_events e
         WHERE d.event_id = e.id AND e.company_id = company AND e.employee_id IN (SELECT unnest(ids))
        RETURNING e.employee_id, d.status
    )
    SELECT jsonb_object_agg(x.employee_id, jsonb_build_array(x.n, x.pending)) INTO deliveries
      FROM (SELECT d.employee_id, count(*) AS n, count(*) FILTER (WHERE d.status = 'pending') AS pending
              FROM d GROUP BY d.employee_id) x;
    WITH d AS (DELETE FROM employes_events e WHERE e.company_id = company AND e.employee_id IN (SELECT unnest(ids))
               RETURNING e.employee_id)
    SELECT jsonb_object_agg(x.employee_id, x.n) INTO events FROM (SELECT d.employee_id, count(*) AS n FROM d GROUP BY 1) x;
    WITH d AS (DELETE FROM employes_timeline t WHERE t.company_id = company AND t.employee_id = ANY (ids) RETURNING t.employee_id)
    SELECT jsonb_object_agg(x.employee_id, x.n) INTO timeline FROM (SELECT d.employee_id, count(*) AS n FROM d GROUP BY 1) x;
    WITH d AS (DELETE FROM employes_changes c WHERE c.company_id = company AND c.employee_id = ANY (ids) RETURNING c.employee_id)
    SELECT jsonb_object_agg(x.employee_id, x.n) INTO changes FROM (SELECT d.employee_id, count(*) AS n FROM d GROUP BY 1) x;
    -- The versions are referred to by their own changes only, deleted above. The foreign-key
    -- triggers would check each deleted version with a read of the whole change table (nothing
    -- indexes raw_from_id or raw_to_id: the sync checks its references set-wise, as
    -- src/worker/references.rs says), so when nothing of the user's is on the history tables
    -- this checks them in one pass and turns the triggers off for the one statement.
    LOCK TABLE employes_raw_data, employes_changes IN ROW EXCLUSIVE MODE;
    versions := ARRAY(SELECT r.id FROM employes_raw_data r WHERE r.company_id = company AND r.employee_id = ANY (ids));
    set_wise := employes_sync_history_is_ours();
    IF set_wise THEN
        IF EXISTS (SELECT 1 FROM employes_changes c WHERE c.raw_from_id IN (SELECT unnest(versions)))
           OR EXISTS (SELECT 1 FROM employes_changes c WHERE c.raw_to_id IN (SELECT unnest(versions))) THEN
            RAISE EXCEPTION 'a change of another employee refers to a version of the employees to forget'
                USING ERRCODE = 'foreign_key_violation';
        END IF;
        PERFORM set_config('session_replication_role', 'replica', true);
    END IF;
    WITH d AS (DELETE FROM employes_raw_data r WHERE r.id IN (SELECT unnest(versions)) RETURNING r.employee_id)
    SELECT jsonb_object_agg(x.employee_id, x.n) INTO raw FROM (SELECT d.employee_id, count(*) AS n FROM d GROUP BY 1) x;
    IF set_wise THEN
        PERFORM set_config('session_replication_role', role, true);
    END IF;
    -- Text that names them: their id becomes [erased]; a log line about them also loses the
    -- database's detail and the API's answer it may have kept.
    UPDATE employes_sync_logs l
       SET message = employes_sync_redact(l.message, ids),
           details = employes_sync_redact(l.details, ids) - 'detail' - 'body'
     WHERE EXISTS (SELECT 1 FROM unnest(ids) i WHERE strpos(l.message, i) > 0 OR strpos(l.details::text, i) > 0)
       AND (employes_sync_redact(l.message, ids) IS DISTINCT FROM l.message
            OR employes_sync_redact(l.details, ids) IS DISTINCT FROM l.details);
    GET DIAGNOSTICS logs = ROW_COUNT;
    UPDATE employes_sync_sessions s SET error = employes_sync_redact(s.error, ids)
     WHERE EXISTS (SELECT 1 FROM unnest(ids) i WHERE strpos(s.error, i) > 0)
       AND employes_sync_redact(s.error, ids) IS DISTINCT FROM s.error;
    GET DIAGNOSTICS sessions = ROW_COUNT;
    UPDATE employes_sync_session_companies s SET error = employes_sync_redact(s.error, ids)
     WHERE s.company_id = company AND EXISTS (SELECT 1 FROM unnest(ids) i WHERE strpos(s.error, i) > 0)
       AND employes_sync_redact(s.error, ids) IS DISTINCT FROM s.error;
    UPDATE employes_events e SET data = employes_sync_redact(e.data, ids)
     WHERE e.employee_id IS NULL AND EXISTS (SELECT 1 FROM unnest(ids) i WHERE strpos(e.data::text, i) > 0)
       AND employes_sync_redact(e.data, ids) IS DISTINCT FROM e.data;
    GET DIAGNOSTICS sync_events = ROW_COUNT;

    -- Someone erased before, let back and erased again keeps one tag: the newest erasure's.
    UPDATE employes_erasures e SET tag = NULL, unforgotten_at = e.erased_at, unforgotten_by = 'erased again later'
     WHERE e.company_id = company AND e.tag = ANY (ARRAY(SELECT employes_sync_erasure_tag(company, i) FROM unnest(ids) i));
    FOR rec IN
        INSERT INTO employes_erasures (erased_by, how, reason, company_id, rows_removed, tag)
        SELECT erased_by, how, reason, company,
               jsonb_build_object(
                   'raw_versions', coalesce((raw ->> i)::bigint, 0),
                   'changes', coalesce((changes ->> i)::bigint, 0),
                   'timeline_events', coalesce((timeline ->> i)::bigint, 0),
                   'events', coalesce((events ->> i)::bigint, 0),
                   'webhook_deliveries', coalesce((deliveries -> i ->> 0)::bigint, 0),
                   'pending_deliveries', coalesce((deliveries -> i ->> 1)::bigint, 0),
                   -- text redacted for the whole erasure (a retention round forgets several at once)
                   'log_lines', logs, 'sessions', sessions, 'sync_events', sync_events),
               employes_sync_erasure_tag(company, i)
          FROM unnest(ids) WITH ORDINALITY AS u (i, n)
         ORDER BY u.n
        RETURNING *
    LOOP
        INSERT INTO employes_sync_logs (session_id, level, step, message, details)
        VALUES (NULL, 'info', 'erasure',
                format('an employee of company %s was forgotten (erasure %s, %s): %s raw versions, %s changes, %s timeline events, %s events and %s webhook deliveries removed',
                       company, rec.id, how, rec.rows_removed ->> 'raw_versions', rec.rows_removed ->> 'changes',
                       rec.rows_removed ->> 'timeline_events', rec.rows_removed ->> 'events',
                       rec.rows_removed ->> 'webhook_deliveries'),
                jsonb_build_object('erasure_id', rec.id, 'company_id', company, 'rows_removed', rec.rows_removed));
        RETURN NEXT rec;
    END LOOP;
END
$$;
COMMENT ON FUNCTION employes_sync_forget(uuid, text[], text, text, text) IS
    'Internal: removes every row of these employees of a company, redacts their ids in logs, session errors and sync events, and records one erasure each (employes_forget_employee and the retention call it).';

-- The queued or running session whose worker is alive, if any.
CREATE FUNCTION employes_sync_active_session()
RETURNS uuid
LANGUAGE sql STABLE
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
    SELECT ss.id FROM employes_sync_sessions ss
     WHERE ss.status IN ('queued', 'running')
       AND employes_sync_session_stale_reason(ss.status, ss.worker_pid, ss.worker_instance, ss.created_at) IS NULL
     LIMIT 1
$$;
COMMENT ON FUNCTION employes_sync_active_session() IS
    'Internal: the queued or running session whose worker is alive, if any (an erasure waits for none).';

CREATE FUNCTION employes_forget_employee(employee_id text, company_id uuid DEFAULT NULL, reason text DEFAULT NULL)
RETURNS employes_erasures
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    emp text := employes_forget_employee.employee_id;
    company uuid := employes_forget_employee.company_id;
    companies uuid[];
    latest employes_raw_data;
    said text;
    active uuid;
    out employes_erasures;
BEGIN
    IF emp IS NULL OR btrim(emp) = '' THEN
        RAISE EXCEPTION 'employee_id must not be NULL or empty' USING ERRCODE = '22023',
            HINT = 'the Employes id of a former employee: SELECT company_id, employee_id, full_name, left_on FROM employes_former_employees';
    END IF;
    IF reason IS NOT NULL AND (length(reason) > 500 OR reason ~ '[[:cntrl:]]') THEN
        RAISE EXCEPTION 'invalid reason: at most 500 characters without control characters (it has %)', length(reason)
            USING ERRCODE = '22023';
    END IF;
    IF pg_is_in_recovery() THEN
        RAISE EXCEPTION 'cannot forget an employee on a standby' USING ERRCODE = '25006',
            HINT = 'run it on the primary; the standby follows';
    END IF;
    -- No sync may run while the rows go, nor start before they are gone: a new session waits
    -- for this transaction (its INSERT conflicts with this lock, and so does another erasure).
    -- A sync of any company refuses it: its writes take the events lock, then update its
    -- session, the reverse of this order.
    LOCK TABLE employes_sync_sessions IN SHARE ROW EXCLUSIVE MODE;
    active := employes_sync_active_session();
    IF active IS NOT NULL THEN
        RAISE EXCEPTION 'cannot forget an employee while session % syncs', active USING ERRCODE = 'PT409',
            HINT = 'wait for the session to end (employes_sync_wait) or cancel it (employes_sync_cancel), then try again';
    END IF;
    SELECT array_agg(DISTINCT r.company_id) INTO companies
      FROM employes_raw_data r
     WHERE r.kind = 'employee' AND r.employee_id = emp AND (company IS NULL OR r.company_id = company);
    IF companies IS NULL THEN
        RAISE EXCEPTION 'no employee % in %', emp, coalesce('company ' || company, 'any company') USING ERRCODE = 'P0002',
            HINT = 'employes_former_employees lists who can be forgotten; employes_erasures records earlier erasures (without ids)';
    END IF;
    IF cardinality(companies) > 1 THEN
        RAISE EXCEPTION 'employee % exists in % companies', emp, cardinality(companies) USING ERRCODE = '21000',
            HINT = 'give company_id: employes_forget_employee(employee_id, company_id, reason)';
    END IF;
    company := companies[1];
    SELECT * INTO latest FROM employes_raw_data r
     WHERE r.company_id = company AND r.kind = 'employee' AND r.employee_id = emp ORDER BY r.version DESC LIMIT 1;
    IF latest.valid_to IS NULL AND coalesce(latest.payload ->> 'status', '') <> 'out of service' THEN
        RAISE EXCEPTION 'employee % is still listed by Employes as current (status %)', emp,
                        coalesce(latest.payload ->> 'status', 'unknown')
            USING ERRCODE = '55000',
                  HINT = 'only former employees can be forgotten: ones Employes no longer lists, or lists as "out of service" (employes_former_employees). End their employment in Employes; the next sync records it';
    END IF;
    -- The record of the erasure must not name the person it erased.
    SELECT v INTO said
      FROM unnest(ARRAY[emp, latest.payload ->> 'email', latest.payload ->> 'iban', latest.payload ->> 'phone_number',
                        latest.payload ->> 'surname', latest.payload ->> 'first_name',
                        nullif(btrim(latest.payload ->> 'street'), '')]) v
     WHERE length(btrim(v)) >= 3 AND strpos(lower(reason), lower(btrim(v))) > 0
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'invalid reason: it names the employee (their id, name, email, IBAN, phone or street), and the record of an erasure must not'
            USING ERRCODE = '22023', HINT = 'say why, not who: e.g. ''request by letter of 2026-11-30, ticket 1234''';
    END IF;
    SELECT * INTO out FROM employes_sync_forget(company, ARRAY[emp], reason, employes_sync_caller(), 'manual');
    RETURN out;
END
$$;
COMMENT ON FUNCTION employes_forget_employee(text, uuid, text) IS
    'Forgets a former employee (GDPR erasure): removes every raw version, change, timeline event, event and webhook delivery of theirs, replaces their id by [erased] in logs, session errors and sync events, and returns the record of the erasure (when, by whom, why, how many rows; never who). A later sync skips them if the API lists them again (employes_unforget_employee lets them back). SQLSTATE 22023 for a NULL id or a reason that names them, P0002 for an unknown employee, 21000 when the id exists in several companies, 55000 when Employes still lists them as current, PT409 while a session syncs, 25006 on a standby.';

CREATE FUNCTION employes_unforget_employee(employee_id text, company_id uuid)
RETURNS employes_erasures
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    out employes_erasures;
BEGIN
    IF employes_unforget_employee.employee_id IS NULL OR employes_unforget_employee.company_id IS NULL THEN
        RAISE EXCEPTION 'employee_id and company_id must not be NULL' USING ERRCODE = '22023';
    END IF;
    UPDATE employes_erasures e
       SET tag = NULL, unforgotten_at = clock_timestamp(), unforgotten_by = employes_sync_caller()
     WHERE e.company_id = employes_unforget_employee.company_id AND e.tag IS NOT NULL
       AND e.tag = employes_sync_erasure_tag(employes_unforget_employee.company_id, employes_unforget_employee.employee_id)
    RETURNING * INTO out;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no erased employee % in company %', employes_unforget_employee.employee_id,
                        employes_unforget_employee.company_id
            USING ERRCODE = 'P0002', HINT = 'only an employee forgotten with employes_forget_employee can be let back';
    END IF;
    RETURN out;
END
$$;
COMMENT ON FUNCTION employes_unforget_employee(text, uuid) IS
    'Lets a forgotten employee back (someone hired again): the next sync stores them as new if the API lists them; what was erased stays erased. Returns the erasure record, now unforgotten. SQLSTATE 22023 for NULL, P0002 when no erasure of theirs is found.';

-- Superseded raw versions lose their payload once they have been superseded for longer than
-- `days`: their changes keep the values that changed, and the current and last versions keep
-- theirs (the timeline, the current view and the next sync's comparison read those).
CREATE FUNCTION employes_sync_remove_old_payloads(days integer)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    IF days IS NULL OR days < 1 THEN
        RETURN 0;
    END IF;
    UPDATE employes_raw_data r SET payload = NULL, payload_removed_at = clock_timestamp()
     WHERE r.payload IS NOT NULL AND r.valid_to < clock_timestamp() - make_interval(days => days)
       AND EXISTS (SELECT 1 FROM employes_raw_data nx
                    WHERE nx.company_id = r.company_id AND nx.kind = r.kind AND nx.employee_id = r.employee_id
                      AND nx.version = r.version + 1);
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        INSERT INTO employes_sync_logs (session_id, level, step, message, details)
        VALUES (NULL, 'info', 'retention',
                format('raw_retention_days = %s: the payload of %s superseded raw versions was removed', days, n),
                jsonb_build_object('raw_retention_days', days, 'payloads_removed', n));
    END IF;
    RETURN n;
END
$$;
COMMENT ON FUNCTION employes_sync_remove_old_payloads(integer) IS
    'Internal (the watchdog, after employes_sync.raw_retention_days): removes the payload of raw versions superseded more than days ago; returns how many.';

-- Forgets the former employees who left more than `days` ago, company by company; while a
-- session syncs, nobody (the next round tries again).
CREATE FUNCTION employes_sync_forget_former(days integer)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    c uuid;
    ids text[];
    forgotten bigint := 0;
    skipped bigint := 0;
BEGIN
    IF days IS NULL OR days < 1 THEN
        RETURN jsonb_build_object('employees_forgotten', 0, 'former_skipped_syncing', 0);
    END IF;
    -- As employes_forget_employee: nothing while a session syncs (the next round tries again).
    LOCK TABLE employes_sync_sessions IN SHARE ROW EXCLUSIVE MODE;
    IF employes_sync_active_session() IS NOT NULL THEN
        RETURN jsonb_build_object('employees_forgotten', 0, 'former_skipped_syncing',
                                  (SELECT count(*) FROM employes_former_employees f WHERE f.left_on < current_date - days));
    END IF;
    FOR c, ids IN
        SELECT f.company_id, array_agg(f.employee_id ORDER BY f.employee_id)
          FROM employes_former_employees f
         WHERE f.left_on < current_date - days
         GROUP BY f.company_id
    LOOP
        PERFORM employes_sync_forget(c, ids, format('former_employee_retention_days = %s', days), 'employes_sync watchdog',
                                     'retention');
        forgotten := forgotten + cardinality(ids);
    END LOOP;
    RETURN jsonb_build_object('employees_forgotten', forgotten, 'former_skipped_syncing', skipped);
END
$$;
COMMENT ON FUNCTION employes_sync_forget_former(integer) IS
    'Internal (the watchdog, after employes_sync.former_employee_retention_days): forgets the former employees whose left_on is more than days ago, unless a session is syncing.';

-- The token warnings given: one per token expiry and threshold (30, 7 and 1 days before).
CREATE TABLE employes_sync_token_warnings (
    company_id     uuid NOT NULL,
    expires_at     timestamptz NOT NULL,
    threshold_days integer NOT NULL CHECK (threshold_days IN (1, 7, 30)),
    warned_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (company_id, expires_at, threshold_days)
);
SELECT pg_extension_config_dump('employes_sync_token_warnings', '');
ALTER TABLE employes_sync_token_warnings ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE employes_sync_token_warnings IS
    'The warnings given about a token''s expiry (30, 7 and 1 days before): each once per company, expiry and threshold.';

-- What a panel says about a token that expires within 30 days; NULL otherwise.
CREATE FUNCTION employes_sync_token_message(company uuid, name text, has_own_token boolean, expires_at timestamptz)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
    SELECT CASE
        WHEN expires_at IS NULL OR expires_at > clock_timestamp() + interval '30 days' THEN NULL
        WHEN expires_at <= clock_timestamp() THEN
            format('the Employes token of company %s%s expired at %s: syncs fail until a new one is set (%s)',
                   company, coalesce(' (' || name || ')', ''), to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI "UTC"'),
                   CASE WHEN has_own_token THEN 'employes_sync_set_company_token()' ELSE 'employes_sync.api_token' END)
        ELSE
            format('the Employes token of company %s%s expires in %s day(s), at %s: set a new one before then (%s)',
                   company, coalesce(' (' || name || ')', ''),
                   floor(extract(epoch FROM expires_at - clock_timestamp()) / 86400)::bigint,
                   to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI "UTC"'),
                   CASE WHEN has_own_token THEN 'employes_sync_set_company_token()' ELSE 'employes_sync.api_token' END)
    END
$$;
COMMENT ON FUNCTION employes_sync_token_message(uuid, text, boolean, timestamptz) IS
    'Internal: the warning about a company''s token when it expires within 30 days (or has expired); NULL otherwise.';

-- Warns once per threshold (30, 7, 1 days before the token expires): a log line, a
-- token.expiring event (and its NOTIFY); returns the warnings given now.
CREATE FUNCTION employes_sync_check_tokens()
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    c record;
    days bigint;
    threshold integer;
    message text;
    given jsonb := '[]';
    first_id bigint;
    last_id bigint;
    event_id bigint;
BEGIN
    FOR c IN
        SELECT v.company_id, v.name, v.has_own_token, v.token_expires_at
          FROM employes_sync_companies v
         WHERE v.enabled AND NOT v.removed AND v.token_expires_at IS NOT NULL
         ORDER BY v.company_id
    LOOP
        days := floor(extract(epoch FROM c.token_expires_at - clock_timestamp()) / 86400)::bigint;
        threshold := CASE WHEN days < 1 THEN 1 WHEN days < 7 THEN 7 WHEN days < 30 THEN 30 END;
        CONTINUE WHEN threshold IS NULL;
        INSERT INTO employes_sync_token_warnings (company_id, expires_at, threshold_days)
        VALUES (c.company_id, c.token_expires_at, threshold)
        ON CONFLICT DO NOTHING;
        CONTINUE WHEN NOT FOUND;
        message := employes_sync_token_message(c.company_id, c.name, c.has_own_token, c.token_expires_at);
        INSERT INTO employes_sync_logs (session_id, level, step, message, details)
        VALUES (NULL, 'warning', 'token', message,
                jsonb_build_object('company_id', c.company_id, 'expires_at', c.token_expires_at, 'days_left', days,
                                   'threshold_days', threshold));
        PERFORM employes_events_lock();
        INSERT INTO employes_events (company_id, session_id, employee_id, event_type, data)
        VALUES (c.company_id, NULL, NULL, 'token.expiring',
                jsonb_build_object('expires_at', c.token_expires_at, 'days_left', days, 'threshold_days', threshold,
                                   'token', CASE WHEN c.has_own_token THEN 'company' ELSE 'employes_sync.api_token' END,
                                   'message', message))
        RETURNING id INTO event_id;
        first_id := coalesce(first_id, event_id);
        last_id := event_id;
        given := given || jsonb_build_object('company_id', c.company_id, 'expires_at', c.token_expires_at,
                                             'days_left', days, 'threshold_days', threshold, 'message', message);
    END LOOP;
    IF first_id IS NOT NULL THEN
        PERFORM employes_events_notify(first_id, last_id);
    END IF;
    RETURN given;
END
$$;
COMMENT ON FUNCTION employes_sync_check_tokens() IS
    'Internal (the watchdog): for each enabled company whose token expires within 30, 7 or 1 days (or has expired), once per threshold: a warning log line and a token.expiring event; returns the warnings given now.';

-- Only an admin forgets, lets back, or sees erasures.
REVOKE ALL ON employes_erasure_key, employes_erasures, employes_sync_token_warnings, employes_former_employees FROM PUBLIC;
REVOKE ALL ON FUNCTION employes_forget_employee(text, uuid, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION employes_unforget_employee(text, uuid) FROM PUBLIC;
