"""Where the playground keeps its files, for every entry point: the app, `python -m
model.smollm2`, `python -m training.train` and the bench/ scripts.

Tiny, with no app/ and no torch imports, so model/ and training/ can find the data folder
without importing app.settings (which imports model.registry: the circle this module removed).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository
DATA_DIR_ENV = "DATA_DIR"  # app/settings.py declares the setting under this name


def default_data_dir(env: Mapping[str, str] | None = None) -> Path:
    """DATA_DIR as `python app.py` resolves it without a flag: the environment variable, else
    <repo>/data. Pass `env={}` for the built-in default alone (app/settings.py's table does).

    The one environment read outside app/settings.py: the entry points above must agree with
    the app on where the data is, and must not import the app to learn it.
    """
    env = os.environ if env is None else env
    return Path(env.get(DATA_DIR_ENV) or ROOT / "data")
