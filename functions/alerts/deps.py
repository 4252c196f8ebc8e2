"""Dependencies of the alert routes: settings and the alert store."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from functions.alerts.store import AlertStore
from shared.config import FunctionSettings, get_function_settings
from shared.db import get_database


async def _alerts() -> AlertStore:
    settings = get_function_settings()
    return AlertStore(get_database(settings.database_url, settings.database_pool_max))


Settings = Annotated[FunctionSettings, Depends(get_function_settings)]
Alerts = Annotated[AlertStore, Depends(_alerts)]
