"""Automatic capture: from checkpoint files on disk to rows, by themselves.

files.py                what a path is (epoch / step / final checkpoint, sample image)
safetensors_header.py   reading a checkpoint's header without its tensors
checkpoint_metadata.py  a checkpoint's kohya ss_* / modelspec.* / ai-toolkit keys -> run columns
trainer_config.py       kohya TOML configs that fill what checkpoint metadata lacks
diffusers.py            what a diffusers output folder says (hparams.yml, the LoRA rank)
sample_prompts.py       a run's kohya --sample_prompts file: found, read, copied into events
events.py               a file on disk -> an event (observe_checkpoint)
apply.py                an event -> database rows, exactly once (apply_event, Applied)
sample_links.py         kohya samples -> (epoch, test prompt of their line) results, in apply
image_capture.py        a rendered test image -> an event -> its prompt results (watch --images)
image_watch.py          the watcher's part for test image folders (watch --images)
nul_safe.py             NUL characters kept out of text, escaped in jsonb, on capture's writes
delivery.py             events -> database, or the durable spool when it is down (EventDelivery)
watcher.py              the watch daemon: backfill, then live events
"""
