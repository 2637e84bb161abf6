#!/bin/sh
# Post-checkpoint hook for trainers that run a command after each save, e.g. SimpleTuner:
#   --post_checkpoint_script "/path/to/hooks/post_checkpoint.sh {local_checkpoint_path}"
# Records the checkpoint file(s) or folder(s) given. It never fails the trainer: a problem
# is printed and the exit status is 0 (events the database cannot take wait in the spool).
# LORA_TRACKER_RUN=name records into that run.
set -u
# LORA_TRACKER may name another command, e.g. "python -m lora_tracker" (split on spaces)
LORA_TRACKER="${LORA_TRACKER:-lora-tracker}"
if [ -n "${LORA_TRACKER_RUN:-}" ]; then
    $LORA_TRACKER record --run "$LORA_TRACKER_RUN" "$@" || \
        echo "lora-tracker: checkpoint not recorded (see above); training continues" >&2
else
    $LORA_TRACKER record "$@" || \
        echo "lora-tracker: checkpoint not recorded (see above); training continues" >&2
fi
exit 0
