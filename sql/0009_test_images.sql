-- lora-tracker migration 0009: test images that find their epoch by themselves.
--
--   psql "$DATABASE_URL" -1 -f sql/0009_test_images.sql   (after 0008)
--
-- Append-only: never edit this file once applied anywhere; add a new file instead.

-- A prompt_test_results row was one (epoch, test prompt). Images rendered with an epoch's
-- checkpoint (kohya's samples, A1111 / Forge / SD.Next / ComfyUI outputs) are linked by
-- themselves, and the same prompt rendered at several seeds or LoRA weights is several
-- results, not an overwrite. A row is now keyed by (epoch, prompt, result_key):
--   result_key = ''                  the person's own result for the prompt at that epoch
--                                    (what `prompt score` wrote before, and still writes);
--   result_key = 'image:<sha256>'    one image file, by the SHA-256 of its bytes, so a copy
--                                    or a second read of the same image is the same row.
-- Every query of the reference document keeps working: the columns it reads are unchanged.
ALTER TABLE prompt_test_results
    ADD COLUMN result_key     text NOT NULL DEFAULT '',
    ADD COLUMN generator      text CHECK (generator IN ('kohya', 'a1111', 'forge', 'sdnext',
                                                        'comfyui', 'other')),
    ADD COLUMN seed           bigint,
    ADD COLUMN steps          integer CHECK (steps > 0),
    ADD COLUMN cfg_scale      numeric(5, 2) CHECK (cfg_scale >= 0),
    ADD COLUMN sampler        text,
    ADD COLUMN scheduler      text,
    ADD COLUMN width          integer CHECK (width > 0),
    ADD COLUMN height         integer CHECK (height > 0),
    ADD COLUMN lora_weight    numeric(6, 3),
    ADD COLUMN image_metadata jsonb,      -- the generator's raw metadata, as read
    ADD COLUMN captured_at    timestamptz; -- set when capture (not a person) linked the image

ALTER TABLE prompt_test_results
    DROP CONSTRAINT prompt_test_results_epoch_result_id_test_prompt_id_key;
ALTER TABLE prompt_test_results
    ADD CONSTRAINT prompt_test_results_result_key
    UNIQUE (epoch_result_id, test_prompt_id, result_key);

-- Where a test prompt came from when capture created it: a line of a run's kohya prompts
-- file (`--sample_prompts`) or the prompt of an image, so a person can tell them apart
-- from the prompts they wrote.
ALTER TABLE test_prompts
    ADD COLUMN source        text,
    ADD COLUMN source_run_id bigint REFERENCES training_runs (id) ON DELETE SET NULL;
CREATE INDEX test_prompts_source_run_idx ON test_prompts (source_run_id);
-- capture finds a test prompt by its exact text
CREATE INDEX test_prompts_text_idx ON test_prompts (md5(prompt_text));

-- A1111's LoRA hash (its "Lora hashes" infotext field) is the first 12 hex digits of the
-- SHA-256 of a safetensors file's bytes after the header, which is what kohya writes as
-- sshs_model_hash. lora_hash holds the full 64 hex digits: read from sshs_model_hash, or
-- computed (streamed, once) when an image needs it.
ALTER TABLE checkpoints ADD COLUMN lora_hash text
    CHECK (lora_hash ~ '^[0-9a-f]{64}$');
CREATE INDEX checkpoints_lora_hash12_idx ON checkpoints (left(lora_hash, 12));

INSERT INTO schema_migrations (version) VALUES ('0009') ON CONFLICT (version) DO NOTHING;
