"""The Ray driver: the one process that talks to the Ray cluster for the server.

Started by `server.ray_executor.RayExecutor`, which explains why it is a process
of its own. It connects with Ray's own settings (RAY_AUTH_MODE, the token file,
RAY_ADDRESS-style addresses), puts MNIST into the object store once, as uint8
(while the files cannot be read, each run tries again, as a worker process
would), and trains each run in an actor of its own, and each stack of an
experiment's runs (issue #27) in one actor for the stack, with the stack worker
process's code (`stacks.train_stack_job`). Events come back through a streaming
generator the driver awaits as they are yielded: in order, without polling.

Lifetimes: actors are not detached, so Ray ends them when this driver ends, and
this driver ends when the server's end of the pipe closes, however the server
went: a crashed server leaves no actor training for nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import re
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

import ray
from ray.exceptions import ActorUnavailableError, RayActorError, RayError

from ...model.data import DataError, RawMnist, read_raw_mnist
from ..status import Outcome
from .cluster import ClusterPublic, RayNodePublic, ResourcePublic
from .processes import CANCEL_GRACE
from .ray_executor import (
    CPUS_PER_RUN,
    NODE_HEALTH_CHECKS,
    NODE_LOSS_TARGET,
    DriverCommand,
    DriverMessage,
)
from .stacks import StackCommand, StackReport, train_stack_job
from .worker import WorkerMessage, title_process, train_and_report

NAMESPACE = "bnlab"
ANSI_CODES = re.compile(r"\x1b\[[0-9;]*m")  # Ray colours the names in its messages
WATCH_INTERVAL = 1.0  # seconds between looks at the cluster (health, capacity, liveness)
WATCH_TIMEOUT = 4.0  # a look that takes longer than this means the cluster is gone
# ray.init keeps retrying an address nobody answers at; a run waits this long at most.
CONNECT_TIMEOUT = 20.0


class _Actor:
    """What a run's actor and a stack's share: TensorFlow set up once, and where it lives.
    Threaded (max_concurrency=2) so that `cancel` is heard while `train` is busy:
    cancelling is cooperative, checked between steps (a stack's: between windows)."""

    def __init__(self) -> None:
        # Before TensorFlow's import, so before any op: several runs share a GPU
        # with --gpus-per-run < 1, and none may reserve all of its memory.
        os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
        # Ray sets OMP_NUM_THREADS to the actor's CPU reservation (1). The run is
        # to train as it would in a worker process, with TensorFlow's own thread
        # pools sized to the machine; the reservation stays Ray's unit of placement.
        if os.environ.get("OMP_NUM_THREADS") == str(CPUS_PER_RUN):
            del os.environ["OMP_NUM_THREADS"]
        import tensorflow  # noqa: F401  once per actor: the run pays for it up front

    def node(self) -> str:
        """The address of the node this actor lives on, for a failure's reason."""
        return ray.util.get_node_ip_address()


@ray.remote
class RunActor(_Actor):
    """One run."""

    def __init__(self) -> None:
        super().__init__()
        self._stop = threading.Event()

    def cancel(self) -> None:
        self._stop.set()

    def train(self, config_json: str, checkpoint_dir: str, raw: RawMnist) -> Iterator[str]:
        """Yield the run's WorkerMessages (JSON) as they happen, the outcome last."""
        messages: queue.SimpleQueue[WorkerMessage] = queue.SimpleQueue()
        threading.Thread(
            target=train_and_report,
            args=(config_json, messages.put, self._stop.is_set),
            kwargs={"raw": raw, "checkpoint_dir": checkpoint_dir},
            name="bnlab-train",
            daemon=True,
        ).start()
        while True:
            message = messages.get()
            yield message.model_dump_json()
            if message.outcome is not None:
                return


@ray.remote
class StackActor(_Actor):
    """One stack of an experiment's runs, trained and reported as a stack worker
    process does it (`stacks.train_stack_job`), its pipe replaced by two queues."""

    def __init__(self) -> None:
        super().__init__()
        self._cancels: queue.SimpleQueue[StackCommand] = queue.SimpleQueue()

    def cancel(self, command_json: str) -> None:
        """Cancel some runs of the stack (a StackCommand's JSON); heard between windows."""
        self._cancels.put(StackCommand.model_validate_json(command_json))

    def _cancelled(self) -> list[StackCommand]:
        commands = []
        with contextlib.suppress(queue.Empty):
            while True:
                commands.append(self._cancels.get_nowait())
        return commands

    def train(self, command_json: str, checkpoints: str, raw: RawMnist) -> Iterator[str]:
        """Yield the stack's StackReports (JSON) as they happen, `done` last."""
        reports: queue.SimpleQueue[StackReport | BaseException] = queue.SimpleQueue()
        command = StackCommand.model_validate_json(command_json)

        def work() -> None:
            try:
                train_stack_job(command, raw, Path(checkpoints), reports.put, self._cancelled)
            except BaseException as exc:  # where a stack worker process would die
                reports.put(exc)

        threading.Thread(target=work, name="bnlab-stack", daemon=True).start()
        while True:
            report = reports.get()
            if isinstance(report, BaseException):
                raise report  # the driver fails the stack's runs with it
            yield report.model_dump_json()
            if report.done:
                return


async def node_address(node: ray.ObjectRef | None) -> str | None:
    """The actor's node address, if it answered before it was lost."""
    if node is None:
        return None
    try:
        return await asyncio.wait_for(node, 0.5)
    except (RayError, TimeoutError):
        return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def death_reason(exc: RayActorError, node: str | None = None) -> str:
    """A dead actor's error, in one sentence: Ray's message spans a screen."""
    raw = ANSI_CODES.sub("", str(exc))
    if node is None and (ip := re.search(r"\bip=([\w.:-]+)", raw)):
        node = ip.group(1).rstrip(",")  # an actor that never started says where it tried
    where = f" on node {node}" if node else ""
    if "error raised in its creation task" in raw:
        # The actor never started; the traceback's last line says why.
        last = [line.strip() for line in raw.splitlines() if line.strip()][-1]
        if "failed to import on the worker" in raw:
            return (
                f"the Ray actor for this run could not load BN Lab's code{where}: install "
                f"BN Lab on every node (docs/ray.md, Workers on other hosts): {last[:300]}"
            )
        return f"the Ray actor for this run failed to start{where}: {last[:400]}"
    text = " ".join(raw.split())
    for marker in (
        "exit_detail=",
        "Exit detail:",
        "The actor died because its node has died",
    ):
        if marker in text:
            text = text[text.index(marker) :]
            break
    if isinstance(exc, ActorUnavailableError):
        # Ray's word for a broken connection to the actor (its process or its whole
        # node killed). It says "temporarily", but actors are never restarted here:
        # the run is lost all the same. Its RPC error alone says what broke.
        if "RpcError:" in text:
            text = text[text.index("RpcError:") :].split(". ")[0]
        gone = "its process or node went away"
        return f"lost the Ray actor training this run{where} ({gone}): {text[:400]}"
    return f"the Ray actor training this run{where} died: {text[:400]}"


def slow_node_checks() -> str | None:
    """Why this cluster would notice a lost node too late, with the fix, or None."""
    # The head's --system-config reaches a driver only as its RayConfig, after
    # ray.init; Ray has no public API for it.
    config = ray._config
    worst = config.health_check_failure_threshold() * (
        config.health_check_period_ms() + config.health_check_timeout_ms()
    )
    if worst / 1000 <= NODE_LOSS_TARGET:
        return None
    return (
        f"this Ray cluster's node health checks take up to {worst / 1000:.0f} s to notice a node "
        f"that stops answering, and its runs fail only then; for under "
        f"{NODE_LOSS_TARGET:.0f} s start the head with "
        f"--system-config='{json.dumps(NODE_HEALTH_CHECKS)}' (docs/ray.md, Failures)"
    )


def put_mnist(data_dir: str | None) -> ray.ObjectRef:
    """Read (or download) and check the four files, and put them into the object store."""
    return ray.put(read_raw_mnist(data_dir))


def snapshot(address: str) -> ClusterPublic:
    """The cluster as Ray's GCS sees it now: live nodes, total and free CPUs and GPUs."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    total, free = ray.cluster_resources(), ray.available_resources()
    return ClusterPublic(
        address=address,
        connected=True,
        nodes=[
            RayNodePublic(
                id=n["NodeID"],
                address=n.get("NodeManagerAddress", ""),
                cpus=n["Resources"].get("CPU", 0.0),
                gpus=n["Resources"].get("GPU", 0.0),
            )
            for n in nodes
        ],
        cpus=ResourcePublic(total=total.get("CPU", 0.0), free=free.get("CPU", 0.0)),
        gpus=ResourcePublic(total=total.get("GPU", 0.0), free=free.get("GPU", 0.0)),
    )


@dataclass
class _Job:
    """A run's actor, or a stack's, from its submit to its end."""

    task: asyncio.Task  # the driver's `run` (`run_stack`) for it
    actor: ray.actor.ActorHandle | None = None  # none while the run waits for MNIST
    cancelled: bool = False  # the actor as a whole is to stop
    kill_timer: asyncio.TimerHandle | None = None
    runs: list[str] = field(default_factory=list)  # a stack's runs
    stack_cancelled: set[str] = field(default_factory=set)  # of them, cancelled
    said: dict[str, WorkerMessage] = field(default_factory=dict)  # their outcomes, reported
    told: set[str] = field(default_factory=set)  # their ends, sent to the server


class Driver:
    def lost(self, exc: BaseException | None) -> str:
        detail = _first_line(exc) if exc is not None and str(exc) else "it stopped answering"
        return f"lost the connection to the Ray cluster at {self.address} ({detail})"

    async def cluster_answers(self) -> ClusterPublic | BaseException:
        """The cluster now, or why it cannot be seen (Ray's calls block while it retries)."""
        try:
            return await asyncio.wait_for(asyncio.to_thread(snapshot, self.address), WATCH_TIMEOUT)
        except Exception as exc:
            return exc

    def __init__(
        self, conn: Connection, address: str, gpus_per_run: float, data_dir: str | None
    ) -> None:
        self.conn = conn
        self.address = address
        self.gpus_per_run = gpus_per_run
        self.data_dir = data_dir
        self.data: ray.ObjectRef | None = None  # MNIST in the object store, once it is there
        self.loading: asyncio.Task[ray.ObjectRef] | None = None  # the attempt under way
        self.jobs: dict[str, _Job] = {}  # by run id, or by job for a stack
        self.stacked: dict[str, str] = {}  # a stacked run's id -> its stack's job
        self.tasks: set[asyncio.Task] = set()
        self.gpu_cluster = False

    async def mnist(self) -> ray.ObjectRef:
        """MNIST in the object store, put there once by the first attempt that reads it.

        Until then every run makes an attempt (runs submitted together share one), so
        files put in place, or a mirror that answers again, serve the next run without
        a restart, as they would a worker process. Raises the loader's DataError, whose
        message is meant for the user."""
        if self.data is not None:
            return self.data
        if self.loading is None:
            self.loading = asyncio.get_running_loop().create_task(self._load())
            # Its error is read here even when every run that waited was cancelled:
            # otherwise asyncio reports it on stderr as never retrieved.
            self.loading.add_done_callback(lambda task: task.cancelled() or task.exception())
        # Shielded: a run cancelled while it waits leaves the attempt to the others.
        return await asyncio.shield(self.loading)

    async def _load(self) -> ray.ObjectRef:
        try:
            # In a thread: checking and decoding 55 MB (or downloading them) in the loop
            # would hold up the other runs' events and the looks at the cluster.
            self.data = await asyncio.to_thread(put_mnist, self.data_dir)
            return self.data
        finally:
            self.loading = None  # spent, either way: the next run makes its own

    async def prefetch(self) -> None:
        """The driver's own attempt, at start-up."""
        # Whatever went wrong (unreadable files, a full object store), the next run
        # tries again and says why.
        with contextlib.suppress(Exception):
            await self.mnist()

    def send(self, message: DriverMessage) -> None:
        try:
            self.conn.send_bytes(message.model_dump_json().encode())
        except OSError:  # the server is gone: nobody to train for, and the actors go with us
            os._exit(1)

    async def main(self) -> None:
        # Commands wait in the pipe until the first look says whether this is
        # a GPU cluster, which decides what each run's actor asks for.
        first = True
        while True:  # until the server closes the pipe or the cluster is lost: os._exit
            cluster = await self.cluster_answers()
            if isinstance(cluster, BaseException):
                self.send(DriverMessage(fatal=self.lost(cluster)))
                os._exit(1)  # a clean ray.shutdown() would wait for the lost cluster
            self.gpu_cluster = cluster.gpus is not None and cluster.gpus.total > 0
            if first and (warning := slow_node_checks()) is not None:
                self.send(DriverMessage(warning=warning))  # logged before "connected"
            self.send(DriverMessage(cluster=cluster))
            if first:
                # MNIST goes into the object store once the first look is in (a first
                # look slower than WATCH_TIMEOUT is fatal, so nothing competes with it):
                # the first run seldom waits for it.
                prefetch = asyncio.get_running_loop().create_task(self.prefetch())
                self.tasks.add(prefetch)
                prefetch.add_done_callback(self.tasks.discard)
                asyncio.get_running_loop().add_reader(self.conn.fileno(), self.on_command)
                first = False
            await asyncio.sleep(WATCH_INTERVAL)

    def on_command(self) -> None:
        try:
            raw = self.conn.recv_bytes()
        except (EOFError, OSError):  # the server closed us (or died): end, actors too
            os._exit(0)
        command = DriverCommand.model_validate_json(raw)
        if command.action in ("submit", "stack"):
            train = self.run if command.action == "submit" else self.run_stack
            task = asyncio.get_running_loop().create_task(train(command))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        elif command.action == "cancel":
            self.cancel(command.run_id)

    def end(self, run_id: str, outcome: Outcome, error: str | None = None) -> None:
        message = WorkerMessage(outcome=outcome, error=error)
        self.send(DriverMessage(run_id=run_id, worker=message))

    def resources(self) -> dict[str, float]:
        """What an actor asks Ray for: one slot's share, a run's or a stack's alike."""
        # A GPU cluster packs by GPU share alone: a CPU reservation as well would
        # cap the runs per card at the node's CPU count.
        # A stack's actor asks what a run's does, not M shares for its M runs: the
        # scheduler counts a stack as one slot (RayExecutor.busy) and sizes stacks to
        # spread an experiment's runs over the free slots (stacks.stack_size), as on
        # worker processes. M shares would leave Ray short of them while the server
        # shows the stack's runs `running` (and M CPUs, M up to 64, fit no node). A
        # stack is one program, one TensorFlow and one CUDA context running one
        # compiled step, and its M models' weights are small beside that (the MLP's
        # are about 1 MB each): filling the card one small run leaves idle is the point.
        if self.gpu_cluster:
            return {"num_gpus": self.gpus_per_run, "num_cpus": 0}
        return {"num_cpus": CPUS_PER_RUN}

    async def _train(
        self,
        job: _Job,
        actor_class: ray.actor.ActorClass,
        on_message: Callable[[str], bool],
        *args: str,
        started: Callable[[ray.actor.ActorHandle], None] | None = None,
    ) -> tuple[Outcome, str | None] | None:
        """Start `job`'s actor, call its `train(*args, MNIST)` and give each message it
        yields to `on_message` until that says it was the last (True): then None.
        Otherwise how the actor ended for what it did not report: cancelled, or failed
        with the reason. The actor is killed when this returns."""
        node = None
        try:
            data = await self.mnist()
            # No await from here to the actor's handle: `cancel` finds either.
            actor = job.actor = actor_class.options(max_concurrency=2, **self.resources()).remote()
            if started is not None:
                started(actor)
            # Answered while the actor lives, so still known once it (or its node) is gone.
            node = actor.node.remote()
            stream = actor.train.options(num_returns="streaming").remote(*args, data)
            async for ref in stream:
                if on_message(await ref):
                    return None
            return Outcome.FAILED, "the Ray actor ended without saying how the run ended"
        except asyncio.CancelledError:  # by `cancel`, while it waited for MNIST
            return Outcome.CANCELLED, None
        except DataError as exc:  # as a worker process's run fails without the files
            return Outcome.FAILED, str(exc)
        except RayActorError as exc:
            if job.cancelled:
                return Outcome.CANCELLED, None
            # The actor alone, or the whole cluster? The user's next move differs.
            cluster = await self.cluster_answers()
            if isinstance(cluster, BaseException):
                return Outcome.FAILED, self.lost(cluster)
            return Outcome.FAILED, death_reason(exc, await node_address(node))
        except Exception as exc:  # Ray refused the actor, or lost it some other way
            return Outcome.FAILED, f"Ray: {_first_line(exc)}"
        finally:
            if job.kill_timer is not None:
                job.kill_timer.cancel()
            if job.actor is not None:
                # Now, not when the handle is collected: its GPU share is free for the next run.
                with contextlib.suppress(RayError):
                    ray.kill(job.actor)

    async def run(self, command: DriverCommand) -> None:
        run_id = command.run_id
        job = self.jobs[run_id] = _Job(asyncio.current_task())

        def on_message(raw: str) -> bool:
            message = WorkerMessage.model_validate_json(raw)
            if message.outcome is not None:
                job.said[run_id] = message
                return True
            self.send(DriverMessage(run_id=run_id, worker=message))
            return False

        try:
            ended = await self._train(
                job, RunActor, on_message, command.config, command.checkpoint_dir
            )
        finally:
            self.jobs.pop(run_id, None)
        said = job.said.get(run_id)
        self.end(run_id, *((said.outcome, said.error) if said else ended))

    async def run_stack(self, command: DriverCommand) -> None:
        """A stack: each run's events and end as a run's own, its last end once the
        actor is gone (its slot free), as the process executor tells a stack's."""
        stack = command.stack
        job = self.jobs[stack.job] = _Job(asyncio.current_task(), runs=stack.run_ids)
        self.stacked.update((run_id, stack.job) for run_id in stack.run_ids)

        def on_message(raw: str) -> bool:
            report = StackReport.model_validate_json(raw)
            run_id, message = report.run_id, report.message
            if report.done:
                return True
            if message is None or run_id not in job.runs or run_id in job.said:
                return False
            if message.outcome is None:
                self.send(DriverMessage(run_id=run_id, worker=message))
                return False
            job.said[run_id] = message
            if len(job.said) < len(job.runs):
                self.tell(job, run_id, message.outcome, message.error)
            return False

        def started(actor: ray.actor.ActorHandle) -> None:
            if job.stack_cancelled:  # cancelled while the stack waited for MNIST
                actor.cancel.remote(self.stack_cancel(stack.job, job.stack_cancelled))

        try:
            ended = await self._train(
                job,
                StackActor,
                on_message,
                stack.model_dump_json(),
                command.checkpoint_dir,
                started=started,
            )
        finally:
            self.jobs.pop(stack.job, None)
            for run_id in stack.run_ids:
                self.stacked.pop(run_id, None)
        for run_id in job.runs:
            if (said := job.said.get(run_id)) is not None:
                self.tell(job, run_id, said.outcome, said.error)
            elif run_id in job.stack_cancelled:
                self.tell(job, run_id, Outcome.CANCELLED)
            elif ended is None:  # the stack ended without a word on it
                self.tell(job, run_id, Outcome.FAILED, "the stack ended without it")
            else:
                self.tell(job, run_id, *ended)

    def tell(self, job: _Job, run_id: str, outcome: Outcome, error: str | None = None) -> None:
        """A stacked run's end, once."""
        if run_id not in job.told:
            job.told.add(run_id)
            self.end(run_id, outcome, error)

    @staticmethod
    def stack_cancel(stack_job: str, run_ids: set[str]) -> str:
        return StackCommand(kind="cancel", job=stack_job, run_ids=sorted(run_ids)).model_dump_json()

    def cancel(self, run_id: str) -> None:
        if run_id in self.stacked:
            self.cancel_stacked(run_id)
            return
        job = self.jobs.get(run_id)
        if job is None or job.cancelled:
            return
        if job.actor is not None:
            job.actor.cancel.remote()
        self.stop(job)

    def cancel_stacked(self, run_id: str) -> None:
        """One run of a stack: it ends when the stack next asks (between windows), and
        its model trains on with the others; the last run cancelled stops the stack."""
        stack_job = self.stacked[run_id]
        job = self.jobs[stack_job]
        if run_id in job.stack_cancelled or job.cancelled:
            return
        job.stack_cancelled.add(run_id)
        if job.actor is not None:
            job.actor.cancel.remote(self.stack_cancel(stack_job, {run_id}))
        if job.stack_cancelled | set(job.said) >= set(job.runs):
            self.stop(job)

    def stop(self, job: _Job) -> None:
        """Stop the actor as a whole: cooperatively first (its `cancel` was called); an
        actor stuck in a step (or still starting) is killed after the grace period."""
        job.cancelled = True
        if job.actor is None:  # still waiting for MNIST: nothing trains yet to be told
            job.task.cancel()
            return
        job.kill_timer = asyncio.get_running_loop().call_later(CANCEL_GRACE, ray.kill, job.actor)


def auth_hint() -> str:
    """What to check when a cluster does not let this driver in. Ray only logs the
    refusal (InvalidAuthToken) and retries, so the hint names this side's settings."""
    # Ray's own resolution: RAY_AUTH_MODE, which ray.init sets to `token` itself when
    # the address is `auto` and it finds a token (~/.ray/auth_token or the variables).
    if os.environ.get("RAY_AUTH_MODE", "disabled").lower() == "token":
        return (
            "if it is up, check that it uses token authentication with the same token as "
            "this server (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token); "
            "docs/ray.md, Authentication"
        )
    return (
        "if it is up, it may require token authentication, which is off for this server: "
        "set RAY_AUTH_MODE=token for it (docs/ray.md, Authentication)"
    )


def run_driver(conn: Connection, address: str, gpus_per_run: float, data_dir: str | None) -> None:
    # Ctrl-C in the server's terminal reaches the whole process group; the
    # server decides when the driver ends (by closing the pipe).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    title_process("bnlab-ray")

    def give_up() -> None:
        reason = (
            f"cannot connect to the Ray cluster at {address} within {CONNECT_TIMEOUT:.0f} s; "
            f"{auth_hint()}"
        )
        with contextlib.suppress(OSError):
            conn.send_bytes(DriverMessage(fatal=reason).model_dump_json().encode())
        os._exit(1)

    watchdog = threading.Timer(CONNECT_TIMEOUT, give_up)
    watchdog.start()
    try:
        ray.init(
            address=address,
            namespace=NAMESPACE,
            log_to_driver=False,  # the actors' TensorFlow chatter stays in Ray's logs
            logging_level="WARNING",
        )
    except Exception as exc:
        reason = f"cannot connect to the Ray cluster at {address}: {_first_line(exc)}"
        conn.send_bytes(DriverMessage(fatal=reason).model_dump_json().encode())
        return
    finally:
        watchdog.cancel()
    asyncio.run(Driver(conn, address, gpus_per_run, data_dir).main())
