"""Test images rendered in A1111 / Forge / SD.Next / ComfyUI, linked to the epoch
checkpoint they were made with (issue 12).

- ``reader``: an image file -> its SHA-256 and generation metadata (Pillow);
  ``infotext`` (A1111 / Forge / SD.Next) and ``comfyui`` parse what the tools write.
- ``matching``: an image's LoRAs -> tracked checkpoints (A1111's LoRA hash, else the file
  name); ``lora_hash`` computes A1111's hash of a safetensors file.
- ``linking``: folders of images -> ``prompt_test_results`` rows, counted in a LinkReport.

Pillow is imported only when an image is read.
"""
