"""A real transformers Trainer + PEFT LoRA run (tiny random model, CPU) recorded through
LoraTrackerCallback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .conftest import rows

try:
    import peft
    import torch
    import transformers
except ImportError as exc:  # pragma: no cover - CI installs them
    if os.environ.get("CI"):
        raise
    pytest.skip(f"transformers/peft/torch not installed: {exc}", allow_module_level=True)

pytestmark = pytest.mark.slow  # a real transformers Trainer run


class TinyTextDataset(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    def __init__(self, count: int, length: int, vocab: int) -> None:
        generator = torch.Generator().manual_seed(0)
        self.items = torch.randint(0, vocab, (count, length), generator=generator)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        ids = self.items[index]
        return {"input_ids": ids, "labels": ids.clone()}


def test_trainer_with_peft_lora_is_recorded(tmp_path: Path, db_url: str) -> None:
    """Run, config (rank/alpha), one checkpoint and one loss per epoch, completed."""
    from lora_tracker.integrations.transformers import LoraTrackerCallback

    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=1, n_head=2)
    model = transformers.GPT2LMHeadModel(config)
    lora = peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["c_attn"], lora_dropout=0.0, task_type="CAUSAL_LM"
    )
    peft_model = peft.get_peft_model(model, lora)
    out = tmp_path / "peft-out"
    args = transformers.TrainingArguments(
        output_dir=str(out), num_train_epochs=2, per_device_train_batch_size=4,
        save_strategy="epoch", logging_steps=1, report_to=[], use_cpu=True,
        learning_rate=1e-3, seed=7, disable_tqdm=True,
    )  # fmt: skip
    trainer = transformers.Trainer(
        model=peft_model, args=args, train_dataset=TinyTextDataset(16, 16, 64),
        callbacks=[LoraTrackerCallback("tiny-gpt2-lora", database_url=db_url)],
    )  # fmt: skip
    trainer.train()

    run = rows(db_url, "SELECT * FROM training_runs")
    assert len(run) == 1
    r = run[0]
    assert (r["run_name"], r["status"], r["trainer"], r["network_dim"]) == (
        "tiny-gpt2-lora", "completed", "peft", 4,
    )  # fmt: skip
    assert r["network_alpha"] == 8 and r["learning_rate"] == 1e-3 and r["num_epochs"] == 2
    assert r["config"]["peft_config"]["target_modules"] == ["c_attn"]
    epochs = rows(db_url, "SELECT * FROM epoch_results ORDER BY epoch_number")
    assert [e["epoch_number"] for e in epochs] == [1, 2]
    assert all(e["loss"] is not None and e["loss"] > 0 for e in epochs)
    files = rows(db_url, "SELECT path, kind, global_step FROM checkpoints ORDER BY global_step")
    assert [f["global_step"] for f in files] == [4, 8]
    assert all(f["path"].endswith("adapter_model.safetensors") for f in files)
    assert [e["checkpoint_path"] for e in epochs] == [f["path"] for f in files]
