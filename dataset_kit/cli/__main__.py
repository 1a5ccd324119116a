"""``python -m dataset_kit.cli``."""

import sys

from dataset_kit.cli import main

sys.exit(main())
