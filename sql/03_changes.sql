-- Field-level, typed changes between consecutive raw versions.

CREATE TABLE employes_changes (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id     uuid NOT NULL REFERENCES employes_sync_sessions (id),
    employee_id    text COLLATE "C" NOT NULL,
    kind           text COLLATE "C" NOT NULL CHECK (kind IN ('employee', 'employments')),
    change_type    text COLLATE "C" NOT NULL CHECK (change_type IN (
                       'created', 'updated', 'deleted', 'restored', 'salary_change', 'hours_change',
                       'contract_change', 'status_change', 'termination', 'hired', 'rehired')),
    field_path     text COLLATE "C" NOT NULL,
    old_value      jsonb,
    new_value      jsonb,
    effective_date date,
    detected_at    timestamptz NOT NULL,
    raw_from_id    bigint REFERENCES employes_raw_data (id),
    raw_to_id      bigint REFERENCES employes_raw_data (id),
    company_id     uuid NOT NULL,
    CONSTRAINT employes_changes_links_a_version CHECK (raw_from_id IS NOT NULL OR raw_to_id IS NOT NULL)
);

SELECT pg_extension_config_dump('employes_changes', '');
SELECT pg_extension_config_dump('employes_changes_id_seq', '');

-- The same change can never be recorded twice. The new version leads: the changes a sync writes
-- link versions it has just created, whose ids are the highest, so their keys go to the right
-- edge of the index instead of one random leaf page per employee (after a checkpoint, each such
-- page costs a full-page image in the WAL).
CREATE UNIQUE INDEX employes_changes_unique
    ON employes_changes (coalesce(raw_to_id, 0), coalesce(raw_from_id, 0), kind, field_path, change_type);
-- "The changes of this employee": one narrow key, deduplicated by the B-tree (an employee's
-- changes share one entry), so a sync's insertions touch few pages.
CREATE INDEX employes_changes_employee ON employes_changes (employee_id);
CREATE INDEX employes_changes_detected_at ON employes_changes (detected_at DESC);
-- The few changes the timeline shows as events (status changes, leaving, coming back): one small
-- index, so a timeline refresh does not read every change of every employee it recomputes.
CREATE INDEX employes_changes_timeline ON employes_changes (employee_id)
    WHERE kind = 'employee' AND change_type IN ('status_change', 'deleted', 'restored');

COMMENT ON TABLE employes_changes IS
    'One row per changed field per version transition, classified (salary_change, hours_change, contract_change, status_change, termination, hired, rehired, created, updated, deleted, restored).';
COMMENT ON COLUMN employes_changes.field_path IS 'JSON path of the field, e.g. $.employment.salary.month_wage or $.data[id=...].salary[id=...]; $ for a whole record.';
COMMENT ON COLUMN employes_changes.effective_date IS 'The date the change takes effect, from the API''s start_date/end_date (NULL when the API gives none).';
COMMENT ON COLUMN employes_changes.detected_at IS 'When the sync saw the change (not the effective date).';
COMMENT ON COLUMN employes_changes.raw_from_id IS 'The version before the change (NULL for created).';
COMMENT ON COLUMN employes_changes.raw_to_id IS 'The version after the change (NULL for deleted).';
COMMENT ON COLUMN employes_changes.company_id IS 'The Employes company of the employee.';
