"""Shared route dependencies, in one place."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from bnlab.server.runs import RunService
from bnlab.server.settings import Settings
from bnlab.server.store import Store


def get_service(request: Request) -> RunService:
    return request.app.state.service


def get_store(request: Request) -> Store:
    return request.app.state.service.store


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


ServiceDep = Annotated[RunService, Depends(get_service)]
StoreDep = Annotated[Store, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
