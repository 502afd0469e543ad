-- Every distinct version of every fetched record. A sync never erases history (only an erasure
-- of a former employee does: sql/10_personal_data.sql).
--
-- The text keys of the history tables (kind, employee_id, and field_path, change_type,
-- event_type, event_key below) compare byte by byte (COLLATE "C"), as the worker's Rust code
-- does, whatever the database's default collation: every B-tree insertion and lookup of a sync
-- compares them, and a linguistic collation (glibc, ICU) costs about a fifth more per insertion
-- (bench/lab/collation.sh).
-- Compared with a column of the default collation they still use this one, and its indexes.

CREATE TABLE employes_raw_data (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind              text COLLATE "C" NOT NULL CHECK (kind IN ('employee', 'employments')),
    employee_id       text COLLATE "C" NOT NULL,
    -- NULL once employes_sync.raw_retention_days removed it from a superseded version
    payload           jsonb,
    content_hash      text NOT NULL CHECK (content_hash ~ '^[0-9a-f]{64}$'),
    version           integer NOT NULL CHECK (version >= 1),
    valid_from        timestamptz NOT NULL,
    valid_to          timestamptz,
    first_session_id  uuid NOT NULL REFERENCES employes_sync_sessions (id),
    closed_session_id uuid REFERENCES employes_sync_sessions (id),
    company_id        uuid NOT NULL,
    payload_removed_at timestamptz,
    CONSTRAINT employes_raw_data_version_unique UNIQUE (company_id, kind, employee_id, version),
    CONSTRAINT employes_raw_data_valid_range CHECK (valid_to IS NULL OR valid_to >= valid_from),
    -- Only a version that is no longer current loses its payload, and then says when.
    CONSTRAINT employes_raw_data_payload_removed
        CHECK ((payload IS NULL) = (payload_removed_at IS NOT NULL) AND (payload IS NOT NULL OR valid_to IS NOT NULL))
);

SELECT pg_extension_config_dump('employes_raw_data', '');
SELECT pg_extension_config_dump('employes_raw_data_id_seq', '');

-- At most one current version per record (of a company). It also carries the content hash, so a sync reads the
-- hashes of every current version from this index alone (an index-only scan of a few tens of MB)
-- instead of the whole table with its payloads.
CREATE UNIQUE INDEX employes_raw_data_current
    ON employes_raw_data (company_id, kind, employee_id) INCLUDE (content_hash) WHERE valid_to IS NULL;

COMMENT ON TABLE employes_raw_data IS
    'Every distinct version of every record fetched from Employes (kind employee: the employee record; kind employments: the /employments body). A new version is written only when the canonical content changes.';
COMMENT ON COLUMN employes_raw_data.payload IS 'The record as received; NULL once employes_sync.raw_retention_days removed it from a superseded version (its changes keep the values that changed).';
COMMENT ON COLUMN employes_raw_data.payload_removed_at IS 'When employes_sync.raw_retention_days removed the payload of this superseded version; NULL while it is kept.';
COMMENT ON COLUMN employes_raw_data.content_hash IS 'SHA-256 of the canonical form: key order, 2846 vs 2846.0, null vs absent and dt_update do not count.';
COMMENT ON COLUMN employes_raw_data.valid_from IS 'When this content was first observed.';
COMMENT ON COLUMN employes_raw_data.valid_to IS 'When it stopped being current (replaced or deleted); NULL = current.';
COMMENT ON COLUMN employes_raw_data.first_session_id IS 'The session that first saw this content.';
COMMENT ON COLUMN employes_raw_data.closed_session_id IS 'The session that replaced or deleted this version.';
COMMENT ON COLUMN employes_raw_data.company_id IS 'The Employes company (administration) the record belongs to: employee ids are unique per company.';
