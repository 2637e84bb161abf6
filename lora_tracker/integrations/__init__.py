"""Integrations with training frameworks (kohya sd-scripts, transformers)."""
