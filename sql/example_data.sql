-- lora-tracker example data: the three training runs of the reference document
-- (SD15 PERFECT, SD15 bespoke_baby, SDXL Current), their 13 epoch results and the two
-- caption versions.
--
-- Run it after the schema (psql -1 -f, or the Supabase SQL editor), or use
--   lora-tracker init --examples
-- Loading it twice duplicates nothing: every insert is keyed on a natural key.


INSERT INTO caption_versions (
    version_name, description, includes_hex_codes, includes_accessories, includes_jewelry,
    detail_level, sample_caption, used_in_training_runs
) VALUES
(
    'civitai_v2_7_training',
    'Detailed, accurate captions prepared for the Civitai v2.7 dataset',
    true, true, true,
    'detailed',
    'pixel art baby, chibi proportions, pastel pink onesie (#F4B6C2), white bow headband, tiny gold bracelet, sitting, plain white background, 1px black outline',
    ARRAY['SD15_PERFECT_Nov9', 'SD15_bespoke_baby_Nov7', 'SDXL_Current_Nov12']
),
(
    'sd15_training_512',
    'Shorter captions written for 512x512 SD1.5 training',
    false, true, false,
    'moderate',
    'pixel art baby, pink onesie, bow headband, sitting, white background',
    '{}'
)
ON CONFLICT (version_name) DO NOTHING;

INSERT INTO training_runs (
    run_name, run_date, status, base_model, model_type, num_images, caption_version,
    resolution, network_dim, network_alpha, checkpoint_file_size_mb, overall_verdict,
    quality_score, production_ready, best_epoch, key_findings, issues_found, strengths,
    recommended_for, notes, trainer, output_name, learning_rate, unet_lr, text_encoder_lr,
    optimizer, lr_scheduler, seed, num_epochs, batch_size, network_module
) VALUES
(
    'SD15_PERFECT_Nov9', '2025-11-09 10:00:00+00', 'completed',
    'runwayml/stable-diffusion-v1-5', 'SD15', 203, 'civitai_v2_7_training',
    '512x512', 32, 16, 36, 'success',
    9, true, 7,
    'dim=32 forces the network to simplify: clean pixel art, correct palette, plain backgrounds. Epoch 7 is the sweet spot; epoch 8 starts to overfit.',
    ARRAY['slight overfitting from epoch 8'],
    ARRAY['clean pixel art', 'accurate colour palette', 'plain backgrounds', 'consistent chibi proportions'],
    'production', 'The reference run: SD1.5, small network, detailed captions.',
    'kohya', 'pixelbaby_sd15_dim32', 0.0001, 0.0001, 0.00005,
    'AdamW8bit', 'cosine', 42, 10, 2, 'networks.lora'
),
(
    'SD15_bespoke_baby_Nov7', '2025-11-07 09:00:00+00', 'completed',
    'runwayml/stable-diffusion-v1-5', 'SD15', 203, 'civitai_v2_7_training',
    '512x512', 64, 32, 72, 'failure',
    0, false, NULL,
    'dim=64 gave the base model room to pull back to photorealism: photorealistic babies instead of pixel art, at every epoch.',
    ARRAY['photorealistic babies', 'pixel art style lost', 'wrong backgrounds'],
    '{}',
    'discard', 'Same captions as SD15_PERFECT_Nov9 with twice the network dim.',
    'kohya', 'bespoke_baby_sd15_dim64', 0.0001, 0.0001, 0.00005,
    'AdamW8bit', 'cosine', 42, 10, 2, 'networks.lora'
),
(
    'SDXL_Current_Nov12', '2025-11-12 08:00:00+00', 'in_progress',
    'stabilityai/stable-diffusion-xl-base-1.0', 'SDXL', 203, 'civitai_v2_7_training',
    '1024x1024', 128, 64, 684, 'partial',
    4, false, 6,
    'SDXL struggles with simple pixel art: soft edges and random pixels; more capacity is not better for a simple style. Epochs 9-10 still to be evaluated.',
    ARRAY['random pixels', 'soft edges instead of crisp pixels', 'inconsistent palette'],
    ARRAY['good composition', 'correct poses'],
    'research', 'SDXL at 1024x1024 with the same captions; epochs 9-10 pending.',
    'kohya', 'pixelbaby_sdxl_dim128', 0.0001, 0.0001, 0,
    'Adafactor', 'constant_with_warmup', 1234, 10, 1, 'networks.lora'
)
ON CONFLICT (run_name) DO NOTHING;

INSERT INTO epoch_results (
    training_run_id, epoch_number, checkpoint_path, checkpoint_file_size_mb, test_output_dir,
    visual_quality_score, style_match_score, prompt_adherence_score,
    has_wrong_backgrounds, has_random_pixels, is_photorealistic,
    verdict, production_ready, observations
)
SELECT tr.id, v.epoch_number, v.checkpoint_path, v.size_mb, v.test_output_dir,
       v.visual, v.style, v.adherence, v.wrong_bg, v.random_px, v.photoreal,
       v.verdict, v.production_ready, v.observations
FROM (VALUES
    ('SD15_PERFECT_Nov9', 6, '/training/pixelbaby_sd15_dim32/pixelbaby_sd15_dim32-000006.safetensors', 36.0::numeric, '/training/tests/SD15_PERFECT_Nov9/e06',
        8, 8, 8, false, false, false, 'good', false,
        'Crisp pixel art, palette right; a few anti-aliased edges.'),
    ('SD15_PERFECT_Nov9', 7, '/training/pixelbaby_sd15_dim32/pixelbaby_sd15_dim32-000007.safetensors', 36.0, '/training/tests/SD15_PERFECT_Nov9/e07',
        9, 9, 9, false, false, false, 'best', true,
        'Best epoch: clean 1px outlines, exact palette, plain backgrounds on every test prompt.'),
    ('SD15_PERFECT_Nov9', 8, '/training/pixelbaby_sd15_dim32/pixelbaby_sd15_dim32-000008.safetensors', 36.0, '/training/tests/SD15_PERFECT_Nov9/e08',
        8, 9, 7, false, false, false, 'acceptable', false,
        'Starting to overfit: poses repeat the training set, prompt adherence drops.'),
    ('SD15_bespoke_baby_Nov7', 5, '/training/bespoke_baby_sd15_dim64/bespoke_baby_sd15_dim64-000005.safetensors', 72.0, '/training/tests/SD15_bespoke_baby_Nov7/e05',
        1, 0, 3, true, false, true, 'failure', false,
        'Photorealistic babies, no pixel art at all; detailed nursery backgrounds.'),
    ('SD15_bespoke_baby_Nov7', 10, '/training/bespoke_baby_sd15_dim64/bespoke_baby_sd15_dim64.safetensors', 72.0, '/training/tests/SD15_bespoke_baby_Nov7/e10',
        0, 0, 2, true, false, true, 'failure', false,
        'Still photorealistic at the last epoch: the larger network let the base model bias win.'),
    ('SDXL_Current_Nov12', 1, '/training/pixelbaby_sdxl_dim128/pixelbaby_sdxl_dim128-000001.safetensors', 684.0, '/training/tests/SDXL_Current_Nov12/e01',
        2, 2, 5, true, true, false, 'skip', false,
        'Barely styled yet: painterly, backgrounds from the base model.'),
    ('SDXL_Current_Nov12', 2, '/training/pixelbaby_sdxl_dim128/pixelbaby_sdxl_dim128-000002.safetensors', 684.0, '/training/tests/SDXL_Current_Nov12/e02',
        2, 3, 5, true, true, false, 'skip', false,
        'Some pixel texture, edges soft, random pixels around outlines.'),
    ('SDXL_Current_Nov12', 3, '/training/pixelbaby_sdxl_dim128/pixelbaby_sdxl_dim128-000003.safetensors', 684.0, '/training/tests/SDXL_Current_Nov12/e03',
        3, 3, 5, false, true, false, 'skip', false,
        'Backgrounds now plain; noise pixels remain.'),
    ('SDXL_Current_Nov12', 4, '/training/pixelbaby_sdxl_dim128/pixelbaby_sdxl_dim128-000004.safetensors', 684.0, '/training/tests/SDXL_Current_Nov12/e04',
        3, 4, 6, false, true, false, 'acceptable', false,
        'Palette closer; pixel grid inconsistent across the image.'),
    ('SDXL_Current_Nov12', 5, '/training/pixelbaby_sdxl_dim128/pixelbaby_sdxl_dim128-000005.safetensors', 684.0, '/training/tests/SDXL_Current_Nov12/e05',
        4, 4, 6, false, true, false, 'acceptable', false,
        'Better proportions; still random pixels and soft edges.'),
    ('SDXL_Current_Nov12', 6, '/training/pixelbaby_sdxl_dim128/pixelbaby_sdxl_dim128-000006.safetensors', 684.0, '/training/tests/SDXL_Current_Nov12/e06',
        4, 5, 6, false, true, false, 'good', false,
        'Best SDXL epoch so far, but not production quality: edges never crisp.'),
    ('SDXL_Current_Nov12', 7, '/training/pixelbaby_sdxl_dim128/pixelbaby_sdxl_dim128-000007.safetensors', 684.0, '/training/tests/SDXL_Current_Nov12/e07',
        4, 4, 5, false, true, false, 'acceptable', false,
        'No improvement over epoch 6; palette drifts.'),
    ('SDXL_Current_Nov12', 8, '/training/pixelbaby_sdxl_dim128/pixelbaby_sdxl_dim128-000008.safetensors', 684.0, '/training/tests/SDXL_Current_Nov12/e08',
        3, 4, 5, false, true, false, 'acceptable', false,
        'Slight regression; random pixels more frequent.')
) AS v (run_name, epoch_number, checkpoint_path, size_mb, test_output_dir,
        visual, style, adherence, wrong_bg, random_px, photoreal,
        verdict, production_ready, observations)
JOIN training_runs tr ON tr.run_name = v.run_name
ON CONFLICT (training_run_id, epoch_number) DO NOTHING;
