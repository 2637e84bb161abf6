-- lora-tracker migration 0003: what in-process hooks record beyond files.
--
--   psql "$DATABASE_URL" -1 -f sql/0003_training_metrics.sql   (after 0002)
--
-- Append-only: never edit this file once applied anywhere; add 0004_... instead.

-- Per-epoch metrics a trainer logs besides the average loss (validation loss, learning
-- rates, ...), as {"name": value}.
ALTER TABLE epoch_results ADD COLUMN metrics jsonb;

-- When a hook or the Python API last heard from the run (a run in progress that stopped
-- reporting long ago probably died without saying so).
ALTER TABLE training_runs ADD COLUMN last_event_at timestamptz;

INSERT INTO schema_migrations (version) VALUES ('0003') ON CONFLICT (version) DO NOTHING;
