-- lora-tracker migration 0005: what capture wrote, so a later event may complete it.
--
--   psql "$DATABASE_URL" -1 -f sql/0005_capture_provenance.sql   (after 0003)
--
-- Append-only: never edit this file once applied anywhere; add a new file instead.

-- The value capture last wrote into each training_runs column it filled, as
-- {"column": value} (JSON objects as a digest). A later event that knows better (the kohya
-- hook starts a run from the command line, kohya's checkpoints then state the dataset and
-- the real step count) may replace a value only while the column still holds exactly
-- what capture wrote: a value a person typed is never overwritten.
ALTER TABLE training_runs ADD COLUMN captured_values jsonb;

INSERT INTO schema_migrations (version) VALUES ('0005') ON CONFLICT (version) DO NOTHING;
