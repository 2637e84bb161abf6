"""Run a kohya sd-scripts trainer unchanged, with lora-tracker recording it.

From the sd-scripts folder (lora-tracker installed in kohya's Python environment):

    accelerate launch /path/to/hooks/kohya/lora_tracker_launch.py train_network.py <kohya args>

See hooks/kohya/README.md. The work is done by lora_tracker.integrations.kohya.
"""

import sys

from lora_tracker.integrations.kohya import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
