"""The ui function's settings: what every function needs, plus where its static files are."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from shared.config import FunctionSettings

DEFAULT_STATIC_DIR = Path(__file__).resolve().parent / "static"


class UiSettings(FunctionSettings):
    # The folder whose files the dashboard is built from (read once, at cold start).
    ui_static_dir: Path = DEFAULT_STATIC_DIR


@lru_cache
def get_ui_settings() -> UiSettings:
    return UiSettings()
