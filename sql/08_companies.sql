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
       t.company_id IS NOT NULL AS has_own_token,
       c.added_at,
       c.added_by,
       c.removed_at,
       l.session_id AS last_session_id,
       l.status AS last_status,
       l.started_at AS last_started_at,
       l.completed_at AS last_completed_at,
       l.error AS last_error,
       -- the JWT exp of the company's own token, else of employes_sync.api_token
       CASE WHEN t.company_id IS NOT NULL THEN employes_sync_token_expiry(t.api_token)
            ELSE employes_sync_setting_token_expiry() END AS token_expires_at
FROM employes_sync_company_settings c
LEFT JOIN employes_sync_company_tokens t ON t.company_id = c.company_id
LEFT JOIN LATERAL (
    SELECT sc.session_id, sc.status, sc.started_at, sc.completed_at, sc.error
      FROM employes_sync_session_companies sc
     WHERE sc.company_id = c.company_id
     ORDER BY sc.started_at DESC
     LIMIT 1
) l ON true;
COMMENT ON VIEW employes_sync_companies IS
    'The companies to sync: enabled, removed, whether they have a token of their own (never the token), their last sync (session, status, times, error), and when the token they sync with expires (its JWT exp; NULL when it is not a JWT or unset).';

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
