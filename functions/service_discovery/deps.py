"""Dependencies of the service-discovery routes: the registry the settings name."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated

from fastapi import Depends

from shared.registry import RegistrySettings, ServiceRegistry, get_registry


@lru_cache
def _settings() -> RegistrySettings:
    return RegistrySettings()


async def _registry() -> ServiceRegistry:
    return get_registry(_settings())


Registry = Annotated[ServiceRegistry, Depends(_registry)]
