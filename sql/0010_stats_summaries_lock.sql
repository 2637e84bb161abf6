-- lora-tracker migration 0010: the stats summaries are kept without deadlocks.
--
--   psql "$DATABASE_URL" -1 -f sql/0010_stats_summaries_lock.sql   (after 0009)
--
-- Append-only: never edit this file once applied anywhere; add a new file instead.
--
-- The triggers of 0008 change summary rows (stats_run_groups, stats_epoch_flags) at the end
-- of each statement that moves them, and the row locks they take last until the
-- transaction ends. One statement locks its rows in one order, but a transaction of several
-- statements does not: a person judging a run scores epochs (stats_epoch_flags) and then
-- sets the verdict (stats_run_groups), while deleting a run changes the run groups and then,
-- through the cascade, the epoch flags; a capture batch that creates a run and then sets its
-- settings locks two sets of groups one after the other. Two such transactions at once,
-- each holding what the other wants next, deadlock (40P01): about one transaction in a
-- hundred among six busy writers (tests/test_summary_locks.py).
--
-- No order of rows can fix an order of statements, so summary maintenance is serialized
-- instead: before it changes a summary row, a transaction takes one transaction-level
-- advisory lock (held to its commit or rollback, so it is right through a transaction-mode
-- pooler such as PgBouncer or Supabase's). Transactions that change summary rows already
-- waited for each other on the few shared rows (the single stats_epoch_flags row, one group
-- per model type, ...); now they wait in one queue and never in a circle. A statement that
-- changes no summary (capture's times and sizes, unscored epochs) takes no lock at all.
-- The summaries themselves, and what `stats` reads, are unchanged.

-- The lock's key is two int4 (a key space apart from the one-bigint keys of migrations.py
-- and image_results.py): "lora" in ASCII (1819243105), and 8 for the summaries of 0008.
-- It is called in the trigger functions themselves, not through a function of this
-- schema: on Supabase every function of the public schema can be called through the API.

CREATE OR REPLACE FUNCTION stats_runs_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    changes jsonb;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_advisory_xact_lock(1819243105, 8);  -- (see the top)
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
        IF NOT EXISTS (  -- what capture updates all the time (times, sizes): nothing to do
            SELECT 1 FROM new_rows n JOIN old_rows o ON o.id = n.id
            WHERE (n.overall_verdict, n.quality_score, n.model_type, n.network_dim,
                   n.network_alpha, n.resolution, n.caption_version, n.learning_rate,
                   n.optimizer, n.issues_found)
                  IS DISTINCT FROM
                  (o.overall_verdict, o.quality_score, o.model_type, o.network_dim,
                   o.network_alpha, o.resolution, o.caption_version, o.learning_rate,
                   o.optimizer, o.issues_found)
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
        PERFORM pg_advisory_xact_lock(1819243105, 8);  -- (see the top)
        PERFORM stats_run_groups_add(changes);
        DELETE FROM stats_run_groups WHERE runs = 0;
    END IF;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION stats_epochs_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    d record;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_advisory_xact_lock(1819243105, 8);  -- (see the top)
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
        IF NOT EXISTS (
            SELECT 1 FROM new_rows n JOIN old_rows o ON o.id = n.id
            WHERE (n.visual_quality_score IS NULL, n.has_wrong_backgrounds,
                   n.has_random_pixels, n.is_photorealistic)
                  IS DISTINCT FROM
                  (o.visual_quality_score IS NULL, o.has_wrong_backgrounds,
                   o.has_random_pixels, o.is_photorealistic)
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
        PERFORM pg_advisory_xact_lock(1819243105, 8);  -- (see the top)
        UPDATE stats_epoch_flags SET epochs_scored = epochs_scored + d.scored,
                                     wrong_backgrounds = wrong_backgrounds + d.wb,
                                     random_pixels = random_pixels + d.rp,
                                     photorealistic = photorealistic + d.pr;
    END IF;
    RETURN NULL;
END;
$$;

INSERT INTO schema_migrations (version) VALUES ('0010') ON CONFLICT (version) DO NOTHING;
