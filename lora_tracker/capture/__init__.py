"""Automatic capture: from checkpoint files on disk to rows, by themselves.

files.py              what a path is (epoch / step / final checkpoint, sample image)
safetensors_header.py reading a checkpoint's header without its tensors
metadata.py           kohya ss_* / modelspec.* / ai-toolkit keys -> run columns
trainer_config.py     kohya TOML configs that fill what metadata lacks
events.py             a file on disk -> an event (observe_checkpoint)
record.py             an event -> database rows (record_event)
delivery.py           events -> database, or the durable spool when it is down
watcher.py            the watch daemon: backfill, then live events
"""
