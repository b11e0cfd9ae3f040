"""The devices TensorFlow itself trains on here, asked of a short child process.

`nvidia-smi` lists the GPUs the NVIDIA driver has (`web.settings.visible_gpus`, what
the workers are given); TensorFlow sees only those whose CUDA libraries it can load,
and trains on the CPU otherwise. The server must not import TensorFlow: it would
add seconds to every start, and a CUDA context in the server would hold memory on
every card. So once the server has started, a child interpreter imports TensorFlow,
prints what it sees and which CUDA libraries are missing, and exits; the answer is
kept for /api/health, and when it disagrees with the driver's list the server says
why and how to fix it (`bnlab.model.cuda.gpu_missing_message`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Sequence

from ...model.cuda import gpu_missing_message
from ...model.environment import nvidia_driver_present

log = logging.getLogger("bnlab.devices")

# Seconds the child may take: TensorFlow's import and CUDA's initialisation, on a
# machine busy starting the first runs' workers.
PROBE_TIMEOUT = 180.0
PROBE = (
    "import json\n"
    "from bnlab.model.cuda import missing_libraries\n"
    "from bnlab.model.device import tensorflow_gpus\n"
    "print(json.dumps({'gpus': tensorflow_gpus(), 'missing': missing_libraries()}))\n"
)


def device_names(tensorflow_gpus: Sequence[str]) -> list[str]:
    """TensorFlow's physical GPUs as health names them ("GPU:0"), or ["CPU"]."""
    return [name.removeprefix("/physical_device:") for name in tensorflow_gpus] or ["CPU"]


class DeviceProbe:
    """Asks TensorFlow once which GPUs it sees, in the background (`start`).

    `devices` is None until the child has answered; `warning` says what is wrong:
    GPUs the driver lists (`driver_gpus`) that TensorFlow does not see, or a child
    that could not answer."""

    def __init__(self, driver_gpus: Sequence[str]) -> None:
        self.driver_gpus = list(driver_gpus)
        self.devices: list[str] | None = None
        self.warning: str | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if not self.driver_gpus and not nvidia_driver_present():
            # Without an NVIDIA driver TensorFlow has no GPU to see: no need to pay
            # its import (seconds of CPU, on every start of a CPU server).
            self.devices = device_names([])
            return
        self._task = asyncio.get_running_loop().create_task(self._ask())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _ask(self) -> None:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            PROBE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(child.communicate(), PROBE_TIMEOUT)
        except (TimeoutError, asyncio.CancelledError) as exc:
            child.kill()
            await child.wait()
            if isinstance(exc, asyncio.CancelledError):
                raise
            self._failed(f"it did not answer within {PROBE_TIMEOUT:.0f} s")
            return
        try:
            answer = json.loads(out.decode().strip().splitlines()[-1])
            gpus, missing = list(answer["gpus"]), list(answer["missing"])
        except (IndexError, ValueError, KeyError, TypeError):
            last = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            self._failed(f"it exited with {child.returncode}: {last[0]}")
            return
        self.devices = device_names(gpus)
        self.warning = gpu_missing_message(self.driver_gpus, gpus, missing)
        if self.warning:
            log.warning("%s", self.warning)
        else:
            log.info("TensorFlow trains on %s", ", ".join(self.devices))

    def _failed(self, why: str) -> None:
        self.warning = f"could not ask TensorFlow which devices it sees: {why}"
        log.warning("%s", self.warning)
