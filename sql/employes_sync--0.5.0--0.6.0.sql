-- employes_sync 0.5.0 -> 0.6.0: changes go out.
-- * The event log employes_events (dumped), written in the same transaction as the changes it
--   describes: one event per employee per change type per version transition, and one sync
--   event per company when a session ends. employes_events_since(after_id, max_events) reads
--   it in id order with no gap (writers take employes_events_lock() until they commit).
-- * NOTIFY employes_sync after each transaction that writes events (types, counts, ids; no
--   personal data).
-- * Webhooks: employes_webhook_subscriptions and employes_webhook_deliveries (dumped), the view
--   employes_webhooks, employes_webhook_subscribe / _unsubscribe / _redeliver (revoked from
--   PUBLIC); a background worker (loaded with the library) delivers them.
-- * employes_sync_status() shows the last event id and the webhooks' health;
--   employes_sync_reap_stale() also ends the part of the company a reaped session was syncing.
-- No row is changed: the events start with the first sync after the update.
\echo Use "ALTER EXTENSION employes_sync UPDATE TO '0.6.0'" to load this file. \quit

CREATE FUNCTION "employes_webhook_new_secret"() RETURNS TEXT /* String */
STRICT VOLATILE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'employes_webhook_new_secret_wrapper';

CREATE FUNCTION "employes_webhook_secret_ok"(
	"secret" TEXT /* & str */
) RETURNS bool /* bool */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'employes_webhook_secret_ok_wrapper';

-- Changes go out: the event log, written in the same transaction as the changes it describes,
-- a NOTIFY after each transaction that writes events, and webhook subscriptions whose
-- deliveries a background worker makes (Standard Webhooks signatures, retries, a ledger).

CREATE TABLE employes_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    company_id  uuid,
    session_id  uuid NOT NULL REFERENCES employes_sync_sessions (id),
    employee_id text COLLATE "C",
    event_type  text NOT NULL CHECK (event_type IN (
                    'employee.created', 'employee.updated', 'employee.deleted', 'employee.restored',
                    'employee.hired', 'employee.rehired', 'employee.terminated', 'salary.changed',
                    'hours.changed', 'contract.changed', 'status.changed',
                    'sync.completed', 'sync.partial', 'sync.failed', 'sync.cancelled')),
    data        jsonb NOT NULL,
    CONSTRAINT employes_events_employee_or_sync
        CHECK ((event_type LIKE 'sync.%') = (employee_id IS NULL)),
    CONSTRAINT employes_events_company_of_employee
        CHECK (employee_id IS NULL OR company_id IS NOT NULL)
);
-- Row level security from the start: a role granted SELECT sees the rows its policies let
-- through, and none without one. pg_dump does not carry policies (nor publication memberships)
-- of an extension's tables, only their grants: after a restore the table is closed rather than
-- open, until the policy script is run again (docs/supabase-realtime.sql).
ALTER TABLE employes_events ENABLE ROW LEVEL SECURITY;
SELECT pg_extension_config_dump('employes_events', '');
SELECT pg_extension_config_dump('employes_events_id_seq', '');
CREATE INDEX employes_events_session ON employes_events (session_id);
COMMENT ON TABLE employes_events IS
    'The event log (row level security on: a role granted SELECT sees only what a policy lets through): one event per employee per change type per version transition (every changed field with its path, old and new value and effective date in data.changes), written in the same transaction as those changes; and one sync event per company a session synced (sync.completed, .partial, .failed, .cancelled) with its counts. Ids order the events; read them with employes_events_since().';
COMMENT ON COLUMN employes_events.id IS 'Orders the events: every writer takes employes_events_lock() before it writes, so ids are handed out in commit order and a reader that saw id n has seen every id below it.';
COMMENT ON COLUMN employes_events.company_id IS 'The company; NULL only for the sync event of a session that ended before it synced any company.';
COMMENT ON COLUMN employes_events.employee_id IS 'The employee; NULL for sync events.';
COMMENT ON COLUMN employes_events.data IS 'Employee events: kind, raw_from_id, raw_to_id, effective_date (the earliest of its changes), changes (change_id, field_path, old_value, new_value, effective_date). Sync events: status, the session''s status, source, triggered_by, counts and error.';

-- The event type of a change type (inlined where it is used).
CREATE FUNCTION employes_events_type_of(change_type text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
-- No SET clause: it would keep the planner from inlining it (it names no object).
AS $$
    SELECT CASE change_type
        WHEN 'created' THEN 'employee.created' WHEN 'updated' THEN 'employee.updated'
        WHEN 'deleted' THEN 'employee.deleted' WHEN 'restored' THEN 'employee.restored'
        WHEN 'hired' THEN 'employee.hired' WHEN 'rehired' THEN 'employee.rehired'
        WHEN 'termination' THEN 'employee.terminated' WHEN 'salary_change' THEN 'salary.changed'
        WHEN 'hours_change' THEN 'hours.changed' WHEN 'contract_change' THEN 'contract.changed'
        WHEN 'status_change' THEN 'status.changed' END
$$;
COMMENT ON FUNCTION employes_events_type_of(text) IS
    'The event type of a change type: created -> employee.created, termination -> employee.terminated, salary_change -> salary.changed, ...';

-- Event writers run one at a time, each to its commit: ids are then handed out in commit order,
-- so a reader that has seen id n can never later see a smaller one appear (no gap for a
-- consumer that keeps its last id). The worker takes it in each transaction that writes events,
-- right before it writes them; the session trigger below takes it too.
CREATE FUNCTION employes_events_lock()
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
    SELECT pg_advisory_xact_lock('employes_events'::regclass::oid::integer, 0);
$$;
COMMENT ON FUNCTION employes_events_lock() IS
    'Internal: the lock every writer of employes_events holds until its commit, so that ids are handed out in commit order.';

-- The small NOTIFY of a transaction that wrote events: what happened, never to whom or what.
CREATE FUNCTION employes_events_notify(first_id bigint, last_id bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    payload jsonb;
BEGIN
    SELECT jsonb_build_object(
               'first_id', min(e.id), 'last_id', max(e.id), 'count', count(*),
               'session_id', min(e.session_id::text), 'company_id', min(e.company_id::text),
               'types', (SELECT jsonb_object_agg(t.event_type, t.n)
                           FROM (SELECT x.event_type, count(*) AS n FROM employes_events x
                                  WHERE x.id BETWEEN first_id AND last_id GROUP BY x.event_type) t))
      INTO payload
      FROM employes_events e
     WHERE e.id BETWEEN first_id AND last_id;
    IF (payload ->> 'count')::bigint > 0 THEN
        PERFORM pg_notify('employes_sync', payload::text);
    END IF;
END
$$;
COMMENT ON FUNCTION employes_events_notify(bigint, bigint) IS
    'Internal: NOTIFY employes_sync with the event types and counts, the first and last id, the session and company of the events first_id..last_id (no personal data).';

-- A session that ends (worker, reaper, or a trigger without a worker slot) writes its sync
-- events in the same transaction: one per company it synced, with that company's counts, or
-- one without a company when it synced none.
CREATE FUNCTION employes_events_session_ended()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    first_id bigint;
    last_id bigint;
    kind text := CASE NEW.status WHEN 'completed' THEN 'sync.completed' WHEN 'partial' THEN 'sync.partial'
                                 WHEN 'cancelled' THEN 'sync.cancelled' ELSE 'sync.failed' END;
BEGIN
    PERFORM employes_events_lock();
    WITH parts AS (
        SELECT sc.company_id, sc.status, sc.pages_done, sc.employees_done, sc.api_requests, sc.retries,
               sc.versions_written, sc.changes_detected, sc.employees_deleted, sc.list_moved,
               sc.records_rejected, sc.errors, sc.error
          FROM employes_sync_session_companies sc WHERE sc.session_id = NEW.id
        UNION ALL
        SELECT NULL, NEW.status, NEW.pages_done, NEW.employees_done, NEW.api_requests, NEW.retries,
               NEW.versions_written, NEW.changes_detected, NEW.employees_deleted, NEW.list_moved,
               NEW.records_rejected, NEW.errors, NEW.error
         WHERE NOT EXISTS (SELECT 1 FROM employes_sync_session_companies sc WHERE sc.session_id = NEW.id)
    ), ins AS (
        INSERT INTO employes_events (company_id, session_id, event_type, data)
        SELECT p.company_id, NEW.id,
               CASE p.status WHEN 'completed' THEN 'sync.completed' WHEN 'partial' THEN 'sync.partial'
                             WHEN 'cancelled' THEN 'sync.cancelled' WHEN 'running' THEN kind
                             ELSE 'sync.failed' END,
               jsonb_build_object('status', CASE p.status WHEN 'running' THEN NEW.status ELSE p.status END,
                                  'session_status', NEW.status, 'source', NEW.source,
                                  'triggered_by', NEW.triggered_by, 'started_at', NEW.started_at,
                                  'completed_at', NEW.completed_at, 'pages_done', p.pages_done,
                                  'employees_done', p.employees_done, 'api_requests', p.api_requests,
                                  'retries', p.retries, 'versions_written', p.versions_written,
                                  'changes_detected', p.changes_detected, 'employees_deleted', p.employees_deleted,
                                  'list_moved', p.list_moved, 'records_rejected', p.records_rejected,
                                  'errors', p.errors,
                                  -- a company's own error; the session's for a part it did not finish
                                  'error', CASE WHEN p.company_id IS NULL OR p.status = 'running' THEN NEW.error
                                                ELSE p.error END)
          FROM parts p
         ORDER BY p.company_id NULLS FIRST
        RETURNING id
    )
    SELECT min(id), max(id) INTO first_id, last_id FROM ins;
    PERFORM employes_events_notify(first_id, last_id);
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION employes_events_session_ended() IS
    'Internal: writes the sync events of a session that has just ended (one per company it synced) and notifies employes_sync.';

CREATE TRIGGER employes_events_session_ended
    AFTER UPDATE OF status ON employes_sync_sessions
    FOR EACH ROW
    WHEN (OLD.status IN ('queued', 'running') AND NEW.status NOT IN ('queued', 'running'))
    EXECUTE FUNCTION employes_events_session_ended();
-- Also where session_replication_role is replica (a database or role may set it): a session's
-- end always writes its sync events.
ALTER TABLE employes_sync_sessions ENABLE ALWAYS TRIGGER employes_events_session_ended;

-- The next events after a consumer's last id, in id order: no gap and no duplicate, whatever
-- order the writers' transactions commit in (see employes_events_lock). A consumer keeps the id
-- of the last event it handled and passes it back.
CREATE FUNCTION employes_events_since(after_id bigint DEFAULT 0, max_events integer DEFAULT 1000)
RETURNS SETOF employes_events
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
BEGIN
    IF after_id IS NULL OR after_id < 0 THEN
        RAISE EXCEPTION 'invalid after_id: %', coalesce(after_id::text, 'NULL') USING ERRCODE = '22023',
            HINT = '0 for the first events, else the id of the last event you handled';
    END IF;
    IF max_events IS NULL OR max_events NOT BETWEEN 1 AND 100000 THEN
        RAISE EXCEPTION 'invalid max_events: %', coalesce(max_events::text, 'NULL') USING ERRCODE = '22023',
            HINT = 'from 1 to 100000';
    END IF;
    RETURN QUERY SELECT * FROM employes_events e WHERE e.id > after_id ORDER BY e.id LIMIT max_events;
END
$$;
COMMENT ON FUNCTION employes_events_since(bigint, integer) IS
    'The next events after after_id (0: from the first), at most max_events (1-100000), in id order: a consumer that passes back the id of the last event it handled catches up with no gap and no duplicate. Runs with the caller''s rights (SELECT on employes_events, and its row level security if any). SQLSTATE 22023 for a bad argument. Reads only (works on a standby).';

COMMENT ON FUNCTION employes_webhook_new_secret() IS
    'Internal: a new Standard Webhooks signing secret, whsec_ + base64 of 32 random bytes from the operating system.';
COMMENT ON FUNCTION employes_webhook_secret_ok(text) IS
    'Internal: whether a text is a Standard Webhooks secret (whsec_ + base64 of 24 to 64 bytes).';

-- Webhooks: each subscription receives, one JSON POST per event, the events after the moment it
-- subscribed (of the types it chose), signed as the Standard Webhooks spec says.
CREATE TABLE employes_webhook_subscriptions (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    url           text NOT NULL CHECK (length(url) <= 2048 AND url ~ '^https?://[^/?#@[:space:]]+([/?#][^[:space:]]*)?$'),
    event_types   text[],
    secret        text NOT NULL CHECK (secret ~ '^whsec_[A-Za-z0-9+/]+={0,2}$'),
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    created_by    text NOT NULL,
    unsubscribed_at timestamptz,
    -- the last event id handed to the delivery queue
    last_event_id bigint NOT NULL DEFAULT 0
);
SELECT pg_extension_config_dump('employes_webhook_subscriptions', '');
COMMENT ON TABLE employes_webhook_subscriptions IS
    'Webhook endpoints (superuser-only: the secret signs the deliveries). Managed with employes_webhook_subscribe / _unsubscribe; read through the view employes_webhooks.';

CREATE TABLE employes_webhook_deliveries (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subscription_id uuid NOT NULL REFERENCES employes_webhook_subscriptions (id),
    event_id        bigint NOT NULL REFERENCES employes_events (id),
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    delivered_at    timestamptz,
    CONSTRAINT employes_webhook_deliveries_once UNIQUE (subscription_id, event_id),
    CONSTRAINT employes_webhook_deliveries_pending_has_time CHECK ((status = 'pending') = (next_attempt_at IS NOT NULL))
);
SELECT pg_extension_config_dump('employes_webhook_deliveries', '');
SELECT pg_extension_config_dump('employes_webhook_deliveries_id_seq', '');
-- What is due, per subscription in the order it is due (the worker reads each one's first few).
CREATE INDEX employes_webhook_deliveries_due ON employes_webhook_deliveries (subscription_id, next_attempt_at, id)
    WHERE status = 'pending';
CREATE INDEX employes_webhook_deliveries_event ON employes_webhook_deliveries (event_id);
COMMENT ON TABLE employes_webhook_deliveries IS
    'One row per event per subscription: pending (next_attempt_at), delivered, failed (a 3xx or 4xx other than 408 and 429: not retried) or dead (after employes_sync.webhook_max_attempts attempts). Finished rows are pruned after employes_sync.log_retention_days.';

CREATE VIEW employes_webhooks AS
SELECT s.id AS subscription_id, s.url, s.event_types, s.unsubscribed_at IS NULL AS active, s.created_at,
       s.created_by, s.unsubscribed_at, s.last_event_id,
       count(d.id) FILTER (WHERE d.status = 'pending') AS pending,
       count(d.id) FILTER (WHERE d.status = 'pending' AND d.attempts > 0) AS failing,
       count(d.id) FILTER (WHERE d.status = 'delivered') AS delivered,
       count(d.id) FILTER (WHERE d.status = 'failed') AS failed,
       count(d.id) FILTER (WHERE d.status = 'dead') AS dead,
       max(d.delivered_at) AS last_delivered_at
  FROM employes_webhook_subscriptions s
  LEFT JOIN employes_webhook_deliveries d ON d.subscription_id = s.id
 GROUP BY s.id;
COMMENT ON VIEW employes_webhooks IS
    'The webhook subscriptions (never their secret) with their deliveries by status.';

-- A subscription's URL: http or https with a host, no credentials; 22023 saying what is wrong.
CREATE FUNCTION employes_webhook_check_url(url text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
BEGIN
    IF url IS NULL OR url !~ '^https?://' THEN
        RAISE EXCEPTION 'invalid webhook url: it must start with http:// or https://' USING ERRCODE = '22023';
    END IF;
    IF length(url) > 2048 OR url ~ '[[:space:][:cntrl:]]' THEN
        RAISE EXCEPTION 'invalid webhook url: at most 2048 characters, without spaces or control characters' USING ERRCODE = '22023';
    END IF;
    IF url !~ '^https?://[^/?#@[:space:]]+([/?#][^[:space:]]*)?$' THEN
        RAISE EXCEPTION 'invalid webhook url: it needs a host and must not carry credentials (user:password@)'
            USING ERRCODE = '22023', HINT = 'e.g. https://hr.example.org/hooks/employes';
    END IF;
    RETURN url;
END
$$;
COMMENT ON FUNCTION employes_webhook_check_url(text) IS
    'Internal: returns a valid webhook URL or raises 22023 saying what is wrong.';

-- The secret goes in and comes out (generated when left out): an INOUT parameter, after the OUT
-- subscription_id, so the result reads (subscription_id, secret).
CREATE FUNCTION employes_webhook_subscribe(url text, event_types text[] DEFAULT NULL,
                                           OUT subscription_id uuid, INOUT secret text DEFAULT NULL)
RETURNS record
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    known text[] := ARRAY['employee.created', 'employee.updated', 'employee.deleted', 'employee.restored',
                          'employee.hired', 'employee.rehired', 'employee.terminated', 'salary.changed',
                          'hours.changed', 'contract.changed', 'status.changed',
                          'sync.completed', 'sync.partial', 'sync.failed', 'sync.cancelled'];
    unknown text;
    key text := employes_webhook_subscribe.secret;
BEGIN
    PERFORM employes_webhook_check_url(url);
    IF event_types IS NOT NULL THEN
        IF cardinality(event_types) = 0 OR array_position(event_types, NULL) IS NOT NULL THEN
            RAISE EXCEPTION 'invalid event_types: give NULL for every event, or a non-empty list without NULLs'
                USING ERRCODE = '22023';
        END IF;
        SELECT t INTO unknown FROM unnest(event_types) t WHERE t <> ALL (known) LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'invalid event type: %', unknown USING ERRCODE = '22023',
                HINT = 'one of ' || array_to_string(known, ', ');
        END IF;
    END IF;
    IF key IS NULL THEN
        key := employes_webhook_new_secret();
    ELSIF NOT employes_webhook_secret_ok(key) THEN
        RAISE EXCEPTION 'invalid secret: % characters; a Standard Webhooks secret is whsec_ followed by the base64 of 24 to 64 random bytes', length(key)
            USING ERRCODE = '22023', HINT = 'leave it out to have one generated';
    END IF;
    -- From now on: the events so far are not sent (employes_events_since reads them).
    PERFORM employes_events_lock();
    INSERT INTO employes_webhook_subscriptions (url, event_types, secret, created_by, last_event_id)
    VALUES (url, (SELECT array_agg(DISTINCT t ORDER BY t) FROM unnest(event_types) t), key, employes_sync_caller(),
            coalesce((SELECT max(e.id) FROM employes_events e), 0))
    RETURNING employes_webhook_subscriptions.id INTO subscription_id;
    secret := key;
END
$$;
COMMENT ON FUNCTION employes_webhook_subscribe(text, text[], text) IS
    'Subscribes a URL to the events from now on (all, or event_types), signed with secret (a Standard Webhooks whsec_ secret; generated when left out). Returns the subscription id and the secret: this is the only time the secret is shown. SQLSTATE 22023 for a bad URL, event type or secret.';

CREATE FUNCTION employes_webhook_unsubscribe(subscription_id uuid)
RETURNS employes_webhooks
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    s employes_webhook_subscriptions;
    out employes_webhooks;
BEGIN
    SELECT * INTO s FROM employes_webhook_subscriptions w WHERE w.id = employes_webhook_unsubscribe.subscription_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no webhook subscription %', coalesce(subscription_id::text, 'NULL') USING ERRCODE = '22023',
            HINT = 'employes_webhooks lists them';
    END IF;
    IF s.unsubscribed_at IS NULL THEN
        UPDATE employes_webhook_subscriptions w SET unsubscribed_at = clock_timestamp() WHERE w.id = s.id;
        -- Nothing more goes out: what was still pending will not be sent (the worker, sending a
        -- round, sees this within a moment and sends none of the rest). Rows locked in id
        -- order, as the worker does.
        PERFORM 1 FROM employes_webhook_deliveries d
          WHERE d.subscription_id = s.id AND d.status = 'pending' ORDER BY d.id FOR UPDATE;
        UPDATE employes_webhook_deliveries d SET status = 'failed', next_attempt_at = NULL,
               last_error = 'unsubscribed before it was delivered'
         WHERE d.subscription_id = s.id AND d.status = 'pending';
    END IF;
    SELECT * INTO out FROM employes_webhooks v WHERE v.subscription_id = s.id;
    RETURN out;
END
$$;
COMMENT ON FUNCTION employes_webhook_unsubscribe(uuid) IS
    'Stops deliveries to a subscription: nothing more is sent, pending deliveries become failed. SQLSTATE 22023 for NULL or an unknown id.';

CREATE FUNCTION employes_webhook_redeliver(delivery_id bigint)
RETURNS employes_webhook_deliveries
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    d employes_webhook_deliveries;
BEGIN
    SELECT * INTO d FROM employes_webhook_deliveries x WHERE x.id = delivery_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no webhook delivery %', coalesce(delivery_id::text, 'NULL') USING ERRCODE = '22023',
            HINT = 'employes_webhook_deliveries lists them';
    END IF;
    IF EXISTS (SELECT 1 FROM employes_webhook_subscriptions s WHERE s.id = d.subscription_id AND s.unsubscribed_at IS NOT NULL) THEN
        RAISE EXCEPTION 'webhook delivery % belongs to a subscription that was unsubscribed', delivery_id
            USING ERRCODE = 'PT409';
    END IF;
    IF d.status = 'pending' THEN
        RAISE EXCEPTION 'webhook delivery % is still pending (next attempt at %)', delivery_id, d.next_attempt_at
            USING ERRCODE = 'PT409';
    END IF;
    -- The same message again (the same webhook-id), with a fresh count of attempts.
    UPDATE employes_webhook_deliveries x
       SET status = 'pending', attempts = 0, next_attempt_at = clock_timestamp(), delivered_at = NULL
     WHERE x.id = delivery_id
    RETURNING * INTO d;
    RETURN d;
END
$$;
COMMENT ON FUNCTION employes_webhook_redeliver(bigint) IS
    'Sends a delivered, failed or dead delivery again (the same message and webhook-id, attempts counted afresh). SQLSTATE 22023 for an unknown id, PT409 while it is pending or when its subscription was unsubscribed.';

REVOKE ALL ON employes_events, employes_webhook_subscriptions, employes_webhook_deliveries, employes_webhooks FROM PUBLIC;
REVOKE ALL ON FUNCTION employes_events_type_of(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION employes_events_lock() FROM PUBLIC;
REVOKE ALL ON FUNCTION employes_events_notify(bigint, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION employes_events_session_ended() FROM PUBLIC;
REVOKE ALL ON FUNCTION employes_events_since(bigint, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION employes_webhook_check_url(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION employes_webhook_new_secret() FROM PUBLIC;
REVOKE ALL ON FUNCTION employes_webhook_secret_ok(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION employes_webhook_subscribe(text, text[], text) FROM PUBLIC;
REVOKE ALL ON FUNCTION employes_webhook_unsubscribe(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION employes_webhook_redeliver(bigint) FROM PUBLIC;

-- A reaped session ends the part of the company it was syncing too.
CREATE OR REPLACE FUNCTION employes_sync_reap_stale() RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    n integer;
BEGIN
    -- Nothing can be written on a standby or in a read-only transaction: the watchdog of the
    -- primary (or of this server once promoted) records them.
    IF pg_is_in_recovery() OR current_setting('transaction_read_only')::boolean THEN
        RETURN 0;
    END IF;
    WITH stale AS (
        SELECT s.id, employes_sync_session_stale_reason(s.status, s.worker_pid, s.worker_instance, s.created_at) AS reason
          FROM employes_sync_sessions s
         WHERE s.status IN ('queued', 'running')
    ), dead AS (
        UPDATE employes_sync_sessions s
           SET status = 'error', completed_at = clock_timestamp(), errors = s.errors + 1, error = stale.reason
          FROM stale
         WHERE s.id = stale.id AND stale.reason IS NOT NULL AND s.status IN ('queued', 'running')
        RETURNING s.id, s.error
    ), parts AS (
        -- and the part of the company it was syncing
        UPDATE employes_sync_session_companies sc
           SET status = 'error', completed_at = clock_timestamp(), errors = sc.errors + 1, error = dead.error
          FROM dead
         WHERE sc.session_id = dead.id AND sc.status = 'running')
    INSERT INTO employes_sync_logs (session_id, level, step, message)
    SELECT id, 'error', 'recovery', error FROM dead;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION employes_sync_reap_stale() IS
    'Marks queued/running sessions that have no live worker on this server as error (and the company each was syncing), with the reason (employes_sync_session_stale_reason). Called by the watchdog, every trigger and every wait; does nothing on a standby or in a read-only transaction.';

-- The panel shows the last event id and the webhooks' health.
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
        'last_event_id', (SELECT max(id) FROM employes_events),
        'webhooks', (SELECT jsonb_build_object(
                         'subscriptions', count(DISTINCT s.id),
                         'pending', count(d.id) FILTER (WHERE d.status = 'pending'),
                         'failing', count(d.id) FILTER (WHERE d.status = 'pending' AND d.attempts > 0),
                         'failed', count(d.id) FILTER (WHERE d.status = 'failed'),
                         'dead', count(d.id) FILTER (WHERE d.status = 'dead'),
                         'oldest_pending_at', min(d.created_at) FILTER (WHERE d.status = 'pending'))
                       FROM employes_webhook_subscriptions s
                       LEFT JOIN employes_webhook_deliveries d ON d.subscription_id = s.id
                      WHERE s.unsubscribed_at IS NULL),
        'employees_synced', (SELECT count(*) FROM employes_raw_data WHERE kind = 'employee' AND valid_to IS NULL),
        'changes_24h', (SELECT count(*) FROM employes_changes WHERE detected_at > clock_timestamp() - interval '24 hours'),
        'scheduler', scheduler);
END
$$;
COMMENT ON FUNCTION employes_sync_status() IS
    'Everything a "Sync now" panel shows, as jsonb: state (never, syncing, current, outdated = last completed sync older than the schedule''s interval or 6 hours when unscheduled, error = the last sync that ran to an end failed or was partial), standby, last_session (worker_gone: ended because its worker is gone, not yet recorded), last_success_at, running_session with progress_percent, companies (each with its last or running sync''s status, error, counts and progress), last_event_id, webhooks (active subscriptions; pending, failing, failed and dead deliveries), employees_synced, changes_24h, scheduler (employes_sync_scheduler_status()). Reads only: works in a read-only transaction and on a standby.';

-- As at install: what default privileges handed Supabase's roles on the new objects is taken back.
DO $$
DECLARE
    target text;
    grantee text;
BEGIN
    FOREACH target IN ARRAY ARRAY[
        'TABLE employes_events', 'TABLE employes_webhook_subscriptions', 'TABLE employes_webhook_deliveries',
        'TABLE employes_webhooks', 'FUNCTION employes_events_type_of(text)', 'FUNCTION employes_events_lock()',
        'FUNCTION employes_events_notify(bigint, bigint)', 'FUNCTION employes_events_session_ended()',
        'FUNCTION employes_events_since(bigint, integer)', 'FUNCTION employes_webhook_check_url(text)',
        'FUNCTION employes_webhook_new_secret()', 'FUNCTION employes_webhook_secret_ok(text)',
        'FUNCTION employes_webhook_subscribe(text, text[], text)', 'FUNCTION employes_webhook_unsubscribe(uuid)',
        'FUNCTION employes_webhook_redeliver(bigint)']
    LOOP
        EXECUTE format('REVOKE ALL ON %s FROM PUBLIC', target);
        FOR grantee IN SELECT rolname FROM pg_roles WHERE rolname IN ('anon', 'authenticated', 'service_role') LOOP
            EXECUTE format('REVOKE ALL ON %s FROM %I', target, grantee);
        END LOOP;
    END LOOP;
END
$$;
