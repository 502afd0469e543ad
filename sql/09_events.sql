-- Changes go out: the event log, written in the same transaction as the changes it describes,
-- a NOTIFY after each transaction that writes events, and webhook subscriptions whose
-- deliveries a background worker makes (Standard Webhooks signatures, retries, a ledger).

CREATE TABLE employes_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    company_id  uuid,
    session_id  uuid REFERENCES employes_sync_sessions (id),
    employee_id text COLLATE "C",
    event_type  text NOT NULL CHECK (event_type IN (
                    'employee.created', 'employee.updated', 'employee.deleted', 'employee.restored',
                    'employee.hired', 'employee.rehired', 'employee.terminated', 'salary.changed',
                    'hours.changed', 'contract.changed', 'status.changed',
                    'sync.completed', 'sync.partial', 'sync.failed', 'sync.cancelled', 'token.expiring')),
    data        jsonb NOT NULL,
    CONSTRAINT employes_events_employee_or_sync
        CHECK ((event_type LIKE 'sync.%' OR event_type LIKE 'token.%') = (employee_id IS NULL)),
    -- the token's warnings come from the watchdog, not from a session
    CONSTRAINT employes_events_session_of_sync
        CHECK ((event_type LIKE 'token.%') = (session_id IS NULL)),
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
    'The event log (row level security on: a role granted SELECT sees only what a policy lets through): one event per employee per change type per version transition (every changed field with its path, old and new value and effective date in data.changes), written in the same transaction as those changes; one sync event per company a session synced (sync.completed, .partial, .failed, .cancelled) with its counts; and token.expiring, 30, 7 and 1 days before a company''s token expires. Ids order the events; read them with employes_events_since().';
COMMENT ON COLUMN employes_events.id IS 'Orders the events: every writer takes employes_events_lock() before it writes, so ids are handed out in commit order and a reader that saw id n has seen every id below it.';
COMMENT ON COLUMN employes_events.company_id IS 'The company; NULL only for the sync event of a session that ended before it synced any company.';
COMMENT ON COLUMN employes_events.employee_id IS 'The employee; NULL for sync and token events.';
COMMENT ON COLUMN employes_events.session_id IS 'The session that wrote the event; NULL for token.expiring (the watchdog''s).';
COMMENT ON COLUMN employes_events.data IS 'Employee events: kind, raw_from_id, raw_to_id, effective_date (the earliest of its changes), changes (change_id, field_path, old_value, new_value, effective_date). Sync events: status, the session''s status, source, triggered_by, counts and error. token.expiring: expires_at, days_left, threshold_days (30, 7, 1), token (employes_sync.api_token or company) and message.';

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
                          'sync.completed', 'sync.partial', 'sync.failed', 'sync.cancelled', 'token.expiring'];
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
