"""A ``transformers.TrainerCallback`` recording a (PEFT LoRA) Trainer run.

    from lora_tracker.integrations.transformers import LoraTrackerCallback

    trainer = Trainer(model=peft_model, args=args, train_dataset=data,
                      callbacks=[LoraTrackerCallback(run_name="my-lora")])

- ``on_train_begin``: the run, in progress, with the TrainingArguments, the PEFT config
  (rank, alpha, target modules) and the model's config; and the launch check
  (``lora_tracker.guard``): a banner when the same settings already failed, and with
  ``guard="strict"`` (or ``LORA_TRACKER_GUARD=strict``) the run recorded as cancelled and
  ``RepeatsFailedRun`` (``SystemExit`` status 3) raised out of ``trainer.train()``;
- ``on_save`` (after the Trainer wrote ``checkpoint-N/``: adapter_model.safetensors,
  adapter_config.json, trainer_state.json): the checkpoint, as an epoch when saving per
  epoch, else as a step;
- ``on_epoch_end``: the epoch's average training loss from ``log_history``;
- ``on_train_end``: completed. A Trainer that raises never calls back; the process's
  uncaught exception marks the run failed (see ``lora_tracker.tracking``).

Only the main process (``state.is_world_process_zero``) records.
"""

from __future__ import annotations

import os
from typing import Any

from transformers import TrainerCallback

from ..tracking import TrackedRun, config_to_dict, flush_timeout, start_run

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_model.bin",
                 "pytorch_lora_weights.safetensors")  # fmt: skip


class LoraTrackerCallback(TrainerCallback):
    """Records a transformers Trainer run with lora-tracker."""

    def __init__(
        self,
        run_name: str | None = None,
        *,
        database_url: str | None = None,
        guard: str | None = None,
        **fields: Any,
    ) -> None:
        self.run_name = run_name
        self.database_url = database_url
        self.guard = guard  # strict / warn / off; None: $LORA_TRACKER_GUARD, else warn
        self.fields = fields
        self.run: TrackedRun | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero or self.run is not None:
            return
        model = kwargs.get("model")
        config: dict[str, Any] = {"training_args": config_to_dict(args.to_dict())}
        fields = dict(self.fields)
        peft = getattr(model, "peft_config", None)
        if isinstance(peft, dict) and peft:
            adapter = next(iter(peft.values()))
            adapter_dict = config_to_dict(
                adapter.to_dict() if hasattr(adapter, "to_dict") else vars(adapter)
            )
            config["peft_config"] = adapter_dict
            fields.setdefault("network_dim", adapter_dict.get("r"))
            fields.setdefault("network_alpha", adapter_dict.get("lora_alpha"))
            fields.setdefault("network_module", adapter_dict.get("peft_type"))
            base = adapter_dict.get("base_model_name_or_path")
            if base:
                fields.setdefault("base_model", base)
        model_config = getattr(model, "config", None)
        if model_config is not None and hasattr(model_config, "to_dict"):
            config["model_config"] = config_to_dict(model_config.to_dict())
        fields.setdefault("learning_rate", args.learning_rate)
        fields.setdefault("num_epochs", int(args.num_train_epochs))
        fields.setdefault("batch_size", args.per_device_train_batch_size)
        fields.setdefault("seed", args.seed)
        fields.setdefault(
            "lr_scheduler", str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type))
        )
        fields.setdefault("optimizer", str(getattr(args.optim, "value", args.optim)))
        fields = {k: v for k, v in fields.items() if v is not None}
        self.run = start_run(
            self.run_name, config, database_url=self.database_url, output_dir=args.output_dir,
            trainer="peft" if peft else "transformers", guard=self.guard, **fields,
        )  # fmt: skip

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.run is None or not state.is_world_process_zero:
            return
        folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        weights = next(
            (os.path.join(folder, f) for f in ADAPTER_FILES
             if os.path.exists(os.path.join(folder, f))),
            None,
        )  # fmt: skip
        if weights is None:
            return
        strategy = str(getattr(args.save_strategy, "value", args.save_strategy))
        epoch = round(state.epoch) if strategy == "epoch" and state.epoch else None
        self.run.log_checkpoint(weights, epoch=epoch)

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.run is None or not state.is_world_process_zero or state.epoch is None:
            return
        epoch = round(state.epoch)
        losses = [
            entry["loss"] for entry in state.log_history
            if "loss" in entry and entry.get("epoch") is not None
            and epoch - 1 < entry["epoch"] <= epoch + 1e-9
        ]  # fmt: skip
        loss = sum(losses) / len(losses) if losses else None
        self.run.log_epoch(epoch, loss=loss, metrics={"global_step": state.global_step})

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.run is None or not state.is_world_process_zero:
            return
        self.run.finish("completed")
        self.run.flush(flush_timeout())
