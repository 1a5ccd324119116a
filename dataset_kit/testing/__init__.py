"""Public test helpers for dataset_kit backends (the ``testing`` extra; imports pytest)."""
