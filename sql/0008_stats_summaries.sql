-- lora-tracker migration 0008: summaries for `lora-tracker stats`, kept by triggers.
--
--   psql "$DATABASE_URL" -1 -f sql/0008_stats_summaries.sql   (after 0007)
--
-- Append-only: never edit this file once applied anywhere; add 0009_... instead.
--
-- `stats` answers the reference document's dashboard queries (success rate, best
-- parameters, issue frequency, outcome by setting, flags on scored epochs). On a long
-- history each is a scan of every run or every epoch; these tables hold the same counts,
-- kept current by statement-level triggers, so `stats` reads a few hundred rows instead.
-- The queries in the reference document still run unchanged on the tables themselves.

-- How many runs have each (verdict, quality score), per group: per model type, per
-- (network dim, alpha, resolution), per value of each setting, and per issue found.
-- Values are kept as text, written as the dashboard queries write them.
CREATE TABLE stats_run_groups (
    kind             text    NOT NULL,
    g1               text,
    g2               text,
    g3               text,
    overall_verdict  text    NOT NULL,
    quality_score    integer,
    runs             bigint  NOT NULL,
    CONSTRAINT stats_run_groups_key
        UNIQUE NULLS NOT DISTINCT (kind, g1, g2, g3, overall_verdict, quality_score)
);

-- One row: what the epoch_flags query counts over every scored epoch.
CREATE TABLE stats_epoch_flags (
    only_row           boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    epochs_scored      bigint  NOT NULL DEFAULT 0,
    wrong_backgrounds  bigint  NOT NULL DEFAULT 0,
    random_pixels      bigint  NOT NULL DEFAULT 0,
    photorealistic     bigint  NOT NULL DEFAULT 0
);

-- The groups of a set of runs, each with +1 (new rows) or -1 (old rows), summed; rows
-- locked in one order (ORDER BY) so concurrent writers never deadlock on one statement.
CREATE FUNCTION stats_run_groups_add(changes jsonb) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO stats_run_groups AS s
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
    HAVING sum(r.sign) <> 0
    ORDER BY k.kind, k.g1, k.g2, k.g3, r.overall_verdict, r.quality_score
    ON CONFLICT ON CONSTRAINT stats_run_groups_key
        DO UPDATE SET runs = s.runs + EXCLUDED.runs;
$$;

CREATE FUNCTION stats_runs_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    changes jsonb;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
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
        PERFORM stats_run_groups_add(changes);
        DELETE FROM stats_run_groups WHERE runs = 0;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER stats_runs_inserted AFTER INSERT ON training_runs
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION stats_runs_changed();
CREATE TRIGGER stats_runs_updated AFTER UPDATE ON training_runs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION stats_runs_changed();
CREATE TRIGGER stats_runs_deleted AFTER DELETE ON training_runs
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION stats_runs_changed();
CREATE TRIGGER stats_runs_truncated AFTER TRUNCATE ON training_runs
    FOR EACH STATEMENT EXECUTE FUNCTION stats_runs_changed();

CREATE FUNCTION stats_epochs_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    d record;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
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
        UPDATE stats_epoch_flags SET epochs_scored = epochs_scored + d.scored,
                                     wrong_backgrounds = wrong_backgrounds + d.wb,
                                     random_pixels = random_pixels + d.rp,
                                     photorealistic = photorealistic + d.pr;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER stats_epochs_inserted AFTER INSERT ON epoch_results
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION stats_epochs_changed();
CREATE TRIGGER stats_epochs_updated AFTER UPDATE ON epoch_results
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION stats_epochs_changed();
CREATE TRIGGER stats_epochs_deleted AFTER DELETE ON epoch_results
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION stats_epochs_changed();
CREATE TRIGGER stats_epochs_truncated AFTER TRUNCATE ON epoch_results
    FOR EACH STATEMENT EXECUTE FUNCTION stats_epochs_changed();

-- The failure patterns (grouped failed runs with an example name) are read from the
-- table itself; this index lets that be an index-only walk over the failed runs.
CREATE INDEX training_runs_failure_patterns_idx
    ON training_runs (model_type, network_dim, resolution, caption_version, run_name)
    WHERE overall_verdict = 'failure';

-- What is already there.
INSERT INTO stats_epoch_flags (only_row) VALUES (true);
UPDATE stats_epoch_flags SET
    epochs_scored = s.scored, wrong_backgrounds = s.wb, random_pixels = s.rp,
    photorealistic = s.pr
FROM (SELECT count(*) AS scored,
             count(*) FILTER (WHERE has_wrong_backgrounds) AS wb,
             count(*) FILTER (WHERE has_random_pixels) AS rp,
             count(*) FILTER (WHERE is_photorealistic) AS pr
      FROM epoch_results WHERE visual_quality_score IS NOT NULL) s;
SELECT stats_run_groups_add(coalesce(jsonb_agg(jsonb_build_object('sign', 1) || to_jsonb(r)), '[]'))
FROM (SELECT overall_verdict, quality_score, model_type, network_dim, network_alpha,
             resolution, caption_version, learning_rate, optimizer, issues_found FROM training_runs) r;

ALTER TABLE stats_run_groups ENABLE ROW LEVEL SECURITY;
ALTER TABLE stats_epoch_flags ENABLE ROW LEVEL SECURITY;

-- As for every table (0004): the API roles of a hosted Supabase project may not truncate,
-- add triggers to, or reference these tables.
DO $$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name) THEN
            EXECUTE format(
                'REVOKE TRUNCATE, TRIGGER, REFERENCES ON stats_run_groups, stats_epoch_flags FROM %I',
                role_name);
        END IF;
    END LOOP;
END
$$;

INSERT INTO schema_migrations (version) VALUES ('0008') ON CONFLICT (version) DO NOTHING;
