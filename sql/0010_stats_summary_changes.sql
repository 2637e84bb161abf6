-- lora-tracker migration 0010: writers of runs and epochs never wait for each other on the
-- stats summaries, so they never deadlock there.
--
--   psql "$DATABASE_URL" -1 -f sql/0010_stats_summary_changes.sql   (after 0009)
--
-- Append-only: never edit this file once applied anywhere; add a new file instead.
--
-- The triggers of 0008 add each statement's change to the summary rows themselves
-- (stats_run_groups, stats_epoch_flags), and those row locks last until the transaction
-- ends. One statement locks its rows in one order, but a transaction of several statements
-- does not: a person judging a run scores epochs (stats_epoch_flags) and then sets the
-- verdict (stats_run_groups), while deleting a run changes the run groups and then, through
-- the cascade, the epoch flags; a capture batch creates a run and then fills its settings
-- (two sets of groups). Two such transactions at once, each holding what the other wants
-- next, deadlock (40P01): about one transaction in a hundred among six busy writers
-- (tests/test_summary_locks.py). No order of rows can fix an order of statements, and one
-- lock around all summary maintenance (tried: pg_advisory_xact_lock) makes it worse where
-- a person and capture write the same run: one holds the run's rows and waits for the lock,
-- the other holds the lock and waits for the run's rows.
--
-- So a writer no longer changes a summary row: it appends its change (+/- counts) to a
-- table of changes, which has no key and so no lock anyone waits for. Whoever writes a
-- change then folds every committed change into the summary rows, if no other transaction
-- is folding at that moment (pg_try_advisory_xact_lock: never waits; a later writer folds
-- what is left). Only the one folding transaction touches summary rows, so no writer ever
-- waits on them. A reader adds the changes not yet folded to the summary rows
-- (SUMMARY_QUERIES in lora_tracker/decisions.py): every statement sees a fold whole or not
-- at all, so the sums are exact. Advisory locks held to the transaction's end work through
-- a transaction-mode pooler (PgBouncer, Supabase's port 6543).

-- Changes not yet folded into stats_run_groups / stats_epoch_flags (same columns).
CREATE TABLE stats_run_group_changes (
    kind             text    NOT NULL,
    g1               text,
    g2               text,
    g3               text,
    overall_verdict  text    NOT NULL,
    quality_score    integer,
    runs             bigint  NOT NULL
);
CREATE TABLE stats_epoch_flag_changes (
    epochs_scored      bigint  NOT NULL,
    wrong_backgrounds  bigint  NOT NULL,
    random_pixels      bigint  NOT NULL,
    photorealistic     bigint  NOT NULL
);

-- Append the groups of a set of runs, each with +1 (new rows) or -1 (old rows), summed.
CREATE FUNCTION stats_run_group_changes_add(changes jsonb) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO stats_run_group_changes
        (kind, g1, g2, g3, overall_verdict, quality_score, runs)
    SELECT k.kind, k.g1, k.g2, k.g3, r.overall_verdict, r.quality_score, sum(r.sign)
    FROM jsonb_to_recordset(changes) AS r(
        sign integer, overall_verdict text, quality_score integer, model_type text,
        network_dim integer, network_alpha numeric, resolution text, caption_version text,
        learning_rate double precision, optimizer text, issues_found text[])
    CROSS JOIN LATERAL (SELECT * FROM (VALUES
        ('model_type', r.model_type, NULL, NULL),
        ('parameters', r.network_dim::text, trim_scale(r.network_alpha)::text, r.resolution),
        ('network_dim', r.network_dim::text, NULL, NULL),
        ('network_alpha', r.network_alpha::float8::text, NULL, NULL),
        ('resolution', r.resolution, NULL, NULL),
        ('caption_version', r.caption_version, NULL, NULL),
        ('learning_rate', r.learning_rate::text, NULL, NULL),
        ('optimizer', r.optimizer, NULL, NULL)
    ) AS v
    UNION ALL  -- each issue found, as often as it is listed (as UNNEST counts it)
    SELECT 'issue', issue, NULL, NULL FROM unnest(r.issues_found) AS issue
    ) AS k(kind, g1, g2, g3)
    GROUP BY k.kind, k.g1, k.g2, k.g3, r.overall_verdict, r.quality_score
    HAVING sum(r.sign) <> 0;
$$;

-- Fold the committed changes (and this transaction's own) into the summary rows, unless
-- another transaction is folding: then it, or a later writer, folds them. The advisory
-- keys are two int4 (apart from the one-bigint keys of migrations.py and image_results.py):
-- "lora" in ASCII (1819243105), and 8 (run groups) or 9 (epoch flags). Only under READ
-- COMMITTED, where each statement sees what the previous folder committed.
CREATE FUNCTION stats_fold_run_groups() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed'
       OR NOT pg_try_advisory_xact_lock(1819243105, 8) THEN
        RETURN;
    END IF;
    WITH folded AS (DELETE FROM stats_run_group_changes RETURNING *)
    INSERT INTO stats_run_groups AS s
        (kind, g1, g2, g3, overall_verdict, quality_score, runs)
    SELECT kind, g1, g2, g3, overall_verdict, quality_score, sum(runs)
    FROM folded
    GROUP BY kind, g1, g2, g3, overall_verdict, quality_score
    HAVING sum(runs) <> 0
    ORDER BY kind, g1, g2, g3, overall_verdict, quality_score
    ON CONFLICT ON CONSTRAINT stats_run_groups_key
        DO UPDATE SET runs = s.runs + EXCLUDED.runs;
    DELETE FROM stats_run_groups WHERE runs = 0;
END;
$$;

CREATE FUNCTION stats_fold_epoch_flags() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed'
       OR NOT pg_try_advisory_xact_lock(1819243105, 9) THEN
        RETURN;
    END IF;
    WITH folded AS (DELETE FROM stats_epoch_flag_changes RETURNING *)
    UPDATE stats_epoch_flags SET
        epochs_scored = epochs_scored + d.scored, wrong_backgrounds = wrong_backgrounds + d.wb,
        random_pixels = random_pixels + d.rp, photorealistic = photorealistic + d.pr
    FROM (SELECT sum(epochs_scored) AS scored, sum(wrong_backgrounds) AS wb,
                 sum(random_pixels) AS rp, sum(photorealistic) AS pr
          FROM folded HAVING count(*) > 0) d;
END;
$$;

CREATE OR REPLACE FUNCTION stats_runs_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    changes jsonb;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN  -- (every writer of training_runs has ended: TRUNCATE waits)
        DELETE FROM stats_run_group_changes;
        DELETE FROM stats_run_groups;
        RETURN NULL;
    END IF;
    -- only the columns the summaries group by: an update of anything else cancels out
    IF TG_OP = 'INSERT' THEN
        SELECT jsonb_agg(jsonb_build_object('sign', 1) || to_jsonb(n)) INTO changes
        FROM (SELECT overall_verdict, quality_score, model_type, network_dim, network_alpha,
                     resolution, caption_version, learning_rate, optimizer, issues_found FROM new_rows) n;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT jsonb_agg(jsonb_build_object('sign', -1) || to_jsonb(o)) INTO changes
        FROM (SELECT overall_verdict, quality_score, model_type, network_dim, network_alpha,
                     resolution, caption_version, learning_rate, optimizer, issues_found FROM old_rows) o;
    ELSE
        -- what capture updates all the time (times, sizes) leaves the grouped values as
        -- they were: the same multiset, nothing to do (EXCEPT ALL hashes the rows once; a
        -- join of new_rows and old_rows on id compared every pair: 35 ms for 500 rows)
        IF NOT EXISTS (
            SELECT overall_verdict, quality_score, model_type, network_dim, network_alpha,
                   resolution, caption_version, learning_rate, optimizer, issues_found
            FROM new_rows
            EXCEPT ALL
            SELECT overall_verdict, quality_score, model_type, network_dim, network_alpha,
                   resolution, caption_version, learning_rate, optimizer, issues_found
            FROM old_rows
        ) THEN
            RETURN NULL;
        END IF;
        SELECT jsonb_agg(c) INTO changes FROM (
            SELECT jsonb_build_object('sign', sum(d.sign)) || to_jsonb(d.row) AS c
            FROM (
                SELECT 1 AS sign, n AS row FROM (
                    SELECT overall_verdict, quality_score, model_type, network_dim,
                           network_alpha, resolution, caption_version, learning_rate,
                           optimizer, issues_found FROM new_rows) n
                UNION ALL
                SELECT -1, o FROM (
                    SELECT overall_verdict, quality_score, model_type, network_dim,
                           network_alpha, resolution, caption_version, learning_rate,
                           optimizer, issues_found FROM old_rows) o
            ) d
            GROUP BY to_jsonb(d.row)
            HAVING sum(d.sign) <> 0
        ) x;
    END IF;
    IF changes IS NOT NULL THEN
        PERFORM stats_run_group_changes_add(changes);
        PERFORM stats_fold_run_groups();
    END IF;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION stats_epochs_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    d record;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN  -- (every writer of epoch_results has ended)
        DELETE FROM stats_epoch_flag_changes;
        UPDATE stats_epoch_flags SET epochs_scored = 0, wrong_backgrounds = 0,
                                     random_pixels = 0, photorealistic = 0;
        RETURN NULL;
    END IF;
    -- (each transition table is named only where the trigger has it)
    IF TG_OP = 'INSERT' THEN
        IF NOT EXISTS (SELECT 1 FROM new_rows WHERE visual_quality_score IS NOT NULL) THEN
            RETURN NULL;  -- capture's rows: nothing scored yet
        END IF;
    ELSIF TG_OP = 'UPDATE' THEN
        IF NOT EXISTS (  -- the counted values, as a multiset (see stats_runs_changed)
            SELECT visual_quality_score IS NULL, has_wrong_backgrounds, has_random_pixels,
                   is_photorealistic
            FROM new_rows
            EXCEPT ALL
            SELECT visual_quality_score IS NULL, has_wrong_backgrounds, has_random_pixels,
                   is_photorealistic
            FROM old_rows
        ) THEN
            RETURN NULL;  -- no scored epoch or flag changed
        END IF;
    END IF;
    IF TG_OP = 'INSERT' THEN
        SELECT count(*) AS scored,
               count(*) FILTER (WHERE has_wrong_backgrounds) AS wb,
               count(*) FILTER (WHERE has_random_pixels) AS rp,
               count(*) FILTER (WHERE is_photorealistic) AS pr
        INTO d FROM new_rows WHERE visual_quality_score IS NOT NULL;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT -count(*) AS scored,
               -count(*) FILTER (WHERE has_wrong_backgrounds) AS wb,
               -count(*) FILTER (WHERE has_random_pixels) AS rp,
               -count(*) FILTER (WHERE is_photorealistic) AS pr
        INTO d FROM old_rows WHERE visual_quality_score IS NOT NULL;
    ELSE
        SELECT coalesce(sum(sign), 0) AS scored,
               coalesce(sum(sign) FILTER (WHERE has_wrong_backgrounds), 0) AS wb,
               coalesce(sum(sign) FILTER (WHERE has_random_pixels), 0) AS rp,
               coalesce(sum(sign) FILTER (WHERE is_photorealistic), 0) AS pr
        INTO d FROM (
            SELECT 1 AS sign, has_wrong_backgrounds, has_random_pixels, is_photorealistic
            FROM new_rows WHERE visual_quality_score IS NOT NULL
            UNION ALL
            SELECT -1, has_wrong_backgrounds, has_random_pixels, is_photorealistic
            FROM old_rows WHERE visual_quality_score IS NOT NULL
        ) c;
    END IF;
    IF d.scored <> 0 OR d.wb <> 0 OR d.rp <> 0 OR d.pr <> 0 THEN
        INSERT INTO stats_epoch_flag_changes
            (epochs_scored, wrong_backgrounds, random_pixels, photorealistic)
        VALUES (d.scored, d.wb, d.rp, d.pr);
        PERFORM stats_fold_epoch_flags();
    END IF;
    RETURN NULL;
END;
$$;

ALTER TABLE stats_run_group_changes ENABLE ROW LEVEL SECURITY;
ALTER TABLE stats_epoch_flag_changes ENABLE ROW LEVEL SECURITY;

-- As for every table (0004): the API roles of a hosted Supabase project may not truncate,
-- add triggers to, or reference these tables. (Like 0008's functions, the fold functions
-- may be called by anyone: as an API role they fold nothing, row level security hides
-- every row from it.)
DO $$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name) THEN
            EXECUTE format(
                'REVOKE TRUNCATE, TRIGGER, REFERENCES ON stats_run_group_changes, '
                'stats_epoch_flag_changes FROM %I', role_name);
        END IF;
    END LOOP;
END
$$;

INSERT INTO schema_migrations (version) VALUES ('0010') ON CONFLICT (version) DO NOTHING;
