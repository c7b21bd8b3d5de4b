"""Shortcut for the sweep command: `python -m clxai_utils.sweep ...` is `python -m clxai_utils.pipeline.sweep ...`."""

from clxai_utils.pipeline.sweep import main

if __name__ == "__main__":
    raise SystemExit(main())
