"""Dependencies of the auth routes: settings.

The logic in ``functions.auth.service`` reaches its store and signing keys through the settings
(``get_auth_store``), because the dashboard's session routes call the same operations without FastAPI.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from shared.config import FunctionSettings, get_function_settings

Settings = Annotated[FunctionSettings, Depends(get_function_settings)]
