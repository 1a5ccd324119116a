"""Entry point of a write helper process: ``python -m dataset_kit.io._encoder_main``.

A module of its own, which the package never imports: running an imported module with
``-m`` makes runpy warn (and execute it twice).
"""

import sys

from dataset_kit.io.encoder_processes import main

if __name__ == "__main__":
    sys.exit(main())
