"""Stand-in for kohya's library/utils.py: setup_logging, called at import and again by
train() with reset=True. kohya's default console handler is rich's RichHandler on stderr
(rich is in its requirements), root level INFO: library logging that propagates shows."""

from __future__ import annotations

import logging
import sys


def setup_logging(args=None, log_level=None, reset=False):
    if logging.root.handlers:
        if reset:
            for handler in logging.root.handlers[:]:
                logging.root.removeHandler(handler)
        else:
            return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt="%(message)s"))
    logging.root.setLevel(getattr(logging, log_level or "INFO"))
    logging.root.addHandler(handler)


setup_logging()
