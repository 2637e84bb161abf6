-- lora-tracker migration 0004: Supabase hardening beyond row level security.
--
--   psql "$DATABASE_URL" -1 -f sql/0004_revoke_truncate_from_api_roles.sql   (after 0003)
--
-- Append-only: never edit this file once applied anywhere; add the next number instead.

-- Supabase grants ALL on every new table in public to its API roles, anon and
-- authenticated (default privileges). Row level security hides and guards rows from them,
-- but it does not govern TRUNCATE, TRIGGER or REFERENCES: anon could empty training_runs
-- with TRUNCATE ... CASCADE through the public API key, or attach a trigger. lora-tracker
-- never uses these roles, so they lose those three rights on every lora-tracker table and
-- view. Where the roles do not exist (any PostgreSQL but Supabase) this does nothing.
-- A later migration that adds a table must revoke the same on it.
DO $$
DECLARE
    api_role text;
    relation text;
BEGIN
    FOREACH api_role IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = api_role);
        FOREACH relation IN ARRAY ARRAY[
            'schema_migrations', 'caption_versions', 'training_runs', 'epoch_results',
            'test_prompts', 'prompt_test_results', 'checkpoints', 'applied_events',
            'best_training_runs', 'production_ready_epochs', 'training_comparison'
        ] LOOP
            EXECUTE format(
                'REVOKE TRUNCATE, TRIGGER, REFERENCES ON TABLE %I FROM %I', relation, api_role
            );
        END LOOP;
    END LOOP;
END
$$;

INSERT INTO schema_migrations (version) VALUES ('0004') ON CONFLICT (version) DO NOTHING;
