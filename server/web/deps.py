"""Shared route dependencies, in one place."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ..execution.devices import DeviceProbe
from ..experiments.service import ExperimentService
from ..runs.service import RunService
from .settings import Settings


def get_service(request: Request) -> RunService:
    return request.app.state.service


def get_experiments(request: Request) -> ExperimentService:
    return request.app.state.experiments


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_devices(request: Request) -> DeviceProbe:
    return request.app.state.devices


ServiceDep = Annotated[RunService, Depends(get_service)]
ExperimentsDep = Annotated[ExperimentService, Depends(get_experiments)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
DevicesDep = Annotated[DeviceProbe, Depends(get_devices)]
