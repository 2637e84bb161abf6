-- lora-tracker migration 0006: runs deleted with `cleanup` stay deleted.
--
--   psql "$DATABASE_URL" -1 -f sql/0006_deleted_runs.sql   (after 0005)
--
-- Append-only: never edit this file once applied anywhere; add 0007_... instead.

-- A deleted run's checkpoint files, as they were when it was deleted. Capture leaves out a
-- file that is still the same file (same size, mtime and content hash), so a
-- watcher started again on the folder does not bring the run back; a file rewritten with
-- new contents is a new checkpoint. `lora-tracker record --force` records it on purpose.
CREATE TABLE deleted_checkpoints (
    host          text        NOT NULL,
    path          text        NOT NULL,
    size_bytes    bigint,
    mtime         timestamptz,
    content_hash  text,
    run_name      text        NOT NULL,
    deleted_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (host, path)
);

-- The capture keys of deleted runs that came from one training process (kohya's session
-- id, a hook's own key): late events of that training do not make the run again. Keys
-- made from a folder and output name are not kept: the next training there is a new run.
CREATE TABLE deleted_runs (
    capture_key  text        PRIMARY KEY,
    run_name     text        NOT NULL,
    deleted_at   timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE deleted_checkpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE deleted_runs ENABLE ROW LEVEL SECURITY;

-- As for every table (0004): the API roles of a hosted Supabase project may not truncate,
-- add triggers to, or reference these tables.
DO $$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name) THEN
            EXECUTE format(
                'REVOKE TRUNCATE, TRIGGER, REFERENCES ON deleted_checkpoints, deleted_runs FROM %I',
                role_name);
        END IF;
    END LOOP;
END
$$;

INSERT INTO schema_migrations (version) VALUES ('0006') ON CONFLICT (version) DO NOTHING;
