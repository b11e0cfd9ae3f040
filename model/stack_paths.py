"""How a stack trains on the machine at hand: with XLA or not, how many models at most
in one stack, and whether the CNN stacks at all (issue #27).

Like the kernel paths (model.kernels), each is timed on the real shapes, alternating
candidates round by round so that load hits them alike, the fastest round counting;
and each is cached per machine in the per-user cache (model.machine_cache), so that
it costs once per machine rather than every stack.

- **XLA** (`Choice.xla`): a stack of SIZES[0] models of the stack's own kind (the
  first config's network, batch size, shifts), its training window with and without
  XLA. Without XLA is the reference; XLA must be clearly faster (MARGIN).
- **Size** (`Choice.size`): the same window, compiled as chosen, at each of SIZES
  that fits in memory; the largest whose per-model rate is within SIZE_MARGIN of the
  best is kept: a larger stack saves start-up and tracing per stack, but one larger
  than the cache may train each model more slowly than two smaller ones.
- **The CNN** (`cnn_stacks`): the seed CNN's second convolution, forward and
  backward, for CNN_MODELS models as one grouped convolution (models folded into
  channels; on a CPU that needs XLA) against as many separate convolutions.

*Where it is timed.* In the process that trains stacks (a stack worker, or a worker
of `bnlab experiment`), before its first stack: `model.stacked.train_stack` asks
`choose`, which times what the cache does not hold yet (seconds to a minute once per
machine and kind of stack: several compilations of the window) and times the CNN
too when the machine has not been asked yet, so that any first stack teaches the
machine whether its CNN stacks. The server never imports TensorFlow and does not
time anything.

*How the planner learns the choices.* It does not need the XLA choice. For the
size it plans with `MAX_STACK`, the hard cap, and `train_stack` splits a stack
larger than the machine's size into parts trained one after the other in the same
worker: the planner spreads runs over slots as before and the worker keeps each
part at the size its machine measured, without the server knowing the thread count
or device the timing depended on. Whether the CNN stacks changes which runs are
grouped at all, so the planner must know it: `RunConfig.stack_key` asks
`cnn_stacks`, which reads the cached verdict without TensorFlow (until a worker
has timed it, the CNN trains one run per worker, as before).

`BNLAB_STACK_PATHS` forces choices, for tests and benchmarks: `xla=0|1`,
`size=N`, `cnn=0|1`, comma-separated (`xla=1,size=64,cnn=0`); what it leaves out
is timed.
"""

from __future__ import annotations

import importlib.metadata
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from . import machine_cache

if TYPE_CHECKING:
    from .config import RunConfig
    from .data import Mnist

ENV_VAR = "BNLAB_STACK_PATHS"
CACHE_FILE = "stacks.json"
# The largest stack anything plans (server.execution.stacks): the hard cap.
MAX_STACK = 64
SIZES = (8, 16, 32, MAX_STACK)  # the sizes timed
ROUNDS = 5  # alternating timing rounds per candidate
SECONDS_PER_ROUND = 0.2  # about, per candidate
# XLA replaces the plain graph only when clearly faster (a cached choice lasts).
MARGIN = 0.95
# The largest size whose per-model rate is at least this share of the best is kept.
SIZE_MARGIN = 0.9
# The share of the memory available when timed that a stack may take, by estimate.
MEMORY_SHARE = 0.5
CNN_MODELS = 2  # the grouped convolution timed (on a 2-core EPYC 4 took 11.6 s a call)
# A grouped convolution whose first timed call is this many times slower than the
# separate ones has lost: no more rounds (on the CPU they would cost seconds each).
CNN_HOPELESS = 2.0


class Choice(NamedTuple):
    xla: bool
    size: int
    # What the timing measured, model-steps/s by stage and candidate ("size: xla=1
    # size=8"; the size's rounds re-time the XLA stage's winner with the others): kept in
    # the cache beside the choice, to say why it was made.
    rates: dict[str, float] | None = None


def forced() -> dict[str, int]:
    """The choices `BNLAB_STACK_PATHS` forces; a bad value is an error naming the variable."""
    value = os.environ.get(ENV_VAR, "").strip()
    choices: dict[str, int] = {}
    for pair in filter(None, (p.strip() for p in value.split(","))):
        name, _, number = pair.partition("=")
        valid = {"xla": {"0", "1"}, "cnn": {"0", "1"}}.get(name)
        if name == "size":
            ok = number.isdigit() and 1 <= int(number) <= MAX_STACK
        else:
            ok = valid is not None and number in valid
        if not ok:
            raise ValueError(
                f"{ENV_VAR}: {pair!r} is not one of xla=0|1, size=1..{MAX_STACK}, cnn=0|1"
            )
        choices[name] = int(number)
    return choices


def _tensorflow() -> str:
    # From the installed package's metadata: the server reads the CNN's verdict without
    # importing TensorFlow, and must name it as the worker that wrote it did.
    try:
        return importlib.metadata.version("tensorflow")
    except importlib.metadata.PackageNotFoundError:
        return "none"


def _cnn_key() -> str:
    # No thread count or device: the server, which reads it, knows neither. A grouped
    # convolution either is a kernel of its own or is not (15x apart on the CPU).
    return f"{machine_cache.cpu_model()} | TensorFlow {_tensorflow()} | stack.cnn"


def cnn_stacks() -> bool:
    """Whether CNN runs stack on this machine: forced, else the verdict a stack worker
    timed and cached (`time_cnn`), else no. TensorFlow-free (the server's planner)."""
    forced_cnn = forced().get("cnn")
    if forced_cnn is not None:
        return bool(forced_cnn)
    verdict = machine_cache.read(CACHE_FILE).get(_cnn_key())
    return isinstance(verdict, dict) and verdict.get("stacks") is True


# --- the timing, in a process with TensorFlow ----------------------------------------

_memo: dict[str, Choice] = {}


def _stack_key(template: RunConfig) -> str:
    from . import kernels

    threads = f"{kernels.intra_op_threads()} thread(s)"
    where = "GPU" if kernels.on_gpu() else "CPU"
    kind = (
        f"{template.arch} batch {template.batch_size} bn {int(template.batch_norm)} "
        f"shift {template.max_shift} {template.optimizer}"
    )
    machine = f"{machine_cache.cpu_model()} | TensorFlow {_tensorflow()}"
    return f"{machine} | {threads} | {where} | {kind}"


def choose(configs: list[RunConfig], data: Mnist) -> Choice:
    """XLA or not, and the largest stack, for stacks like `configs` on this machine:
    forced, else cached, else timed now and cached. Also times whether the CNN
    stacks, once per machine, when nobody has yet."""
    force = forced()
    if "cnn" not in force and _cnn_key() not in machine_cache.read(CACHE_FILE):
        with machine_cache.timing(CACHE_FILE):  # re-read: another worker may have timed it
            if _cnn_key() not in machine_cache.read(CACHE_FILE):
                time_cnn(configs[0].batch_size if configs[0].arch == "cnn" else 64)
    template = configs[0]
    if "xla" in force and "size" in force:
        return Choice(bool(force["xla"]), force["size"])
    key = _stack_key(template)
    choice = _memo.get(key) or _cached(key)
    if choice is None:
        with machine_cache.timing(CACHE_FILE):
            choice = _cached(key)
            if choice is None:
                choice = _time_stack(template, data, force)
                if "xla" not in force:  # a choice made under a forced XLA is not the machine's
                    machine_cache.write(CACHE_FILE, key, choice._asdict())
    _memo[key] = choice
    xla = bool(force["xla"]) if "xla" in force else choice.xla
    return Choice(xla, force.get("size", choice.size), choice.rates)


def _cached(key: str) -> Choice | None:
    stored = machine_cache.read(CACHE_FILE).get(key)
    if isinstance(stored, dict) and {"xla", "size"} <= stored.keys():
        return Choice(bool(stored["xla"]), int(stored["size"]), stored.get("rates"))
    return None


class _Candidate:
    """A stack of `size` models like `template`, its window compiled with or without XLA."""

    def __init__(self, template: RunConfig, data: Mnist, network, size: int, xla: bool) -> None:
        import numpy as np

        from .stacked import StackTrainer

        configs = [template.model_copy(update={"seed": seed}) for seed in range(size)]
        # One network's weights for every model: what is timed is the arithmetic,
        # and building a network per model would cost more than the timing.
        self.trainer = StackTrainer(configs, data, xla=xla, networks=[network] * size)
        self.size, self.xla = size, xla
        self.losses, self.alive = np.zeros(size), np.ones(size, bool)
        self.steps, self.best = 1, float("inf")

    def _seconds(self, steps: int) -> float:
        started = time.perf_counter()
        self.trainer.run(0, steps, self.losses, self.alive)  # returns numpy: waits
        return time.perf_counter() - started

    def warm_up(self) -> None:
        self._seconds(2)  # traces and compiles
        per_step = self._seconds(2) / 2
        self.steps = max(2, int(SECONDS_PER_ROUND / per_step))

    def measure(self) -> None:
        self.best = min(self.best, self._seconds(self.steps) / self.steps)

    @property
    def rate(self) -> float:
        """Model-steps per second, at the best round."""
        return self.size / self.best


def _alternate(candidates: list, measure: Callable) -> None:
    for round_ in range(ROUNDS):
        for candidate in candidates if round_ % 2 == 0 else candidates[::-1]:
            measure(candidate)


def _fits(template: RunConfig, network, sizes: tuple[int, ...]) -> tuple[int, ...]:
    """The sizes whose estimated memory is within MEMORY_SHARE of what is free (on a
    CPU; on a GPU a size that does not fit fails its timing and is left out)."""
    import numpy as np
    import tensorflow as tf

    from .training import EVAL_CHUNK

    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return sizes
    taps: list = []
    network.forward(tf.zeros([1, 28, 28, 1]), taps=taps)
    per_image = sum(int(np.prod(t.shape)) for tap in taps for t in tap if t is not None)
    parameters = sum(int(np.prod(v.shape)) for v in network.variables)
    # Weights, gradients and up to two slots; a training batch's activations kept
    # for the backward pass (a few copies each) and an evaluation chunk's.
    per_model = 4 * (4 * parameters + 4 * template.batch_size * per_image + EVAL_CHUNK * per_image)
    return tuple(s for s in sizes if s * per_model <= MEMORY_SHARE * free) or sizes[:1]


def _time_stack(template: RunConfig, data: Mnist, force: dict[str, int]) -> Choice:
    """Time XLA against none at SIZES[0], then the sizes under the faster (the
    module's docstring). A candidate that cannot run (a grouped convolution on a CPU
    without XLA; a stack that does not fit in a GPU's memory) is left out."""
    import tensorflow as tf

    from .networks import build_network

    network = build_network(template)
    unusable = (tf.errors.InvalidArgumentError, tf.errors.ResourceExhaustedError)

    def ready(size: int, xla: bool) -> _Candidate | None:
        try:
            candidate = _Candidate(template, data, network, size, xla)
            candidate.warm_up()
        except unusable:
            return None
        return candidate

    sizes = _fits(template, network, SIZES)
    first = sizes[0]
    rates: dict[str, float] = {}

    def record(stage: str, candidates: list[_Candidate]) -> None:
        rates.update(
            {f"{stage}: xla={int(c.xla)} size={c.size}": round(c.rate, 1) for c in candidates}
        )

    if "xla" in force:
        xla = bool(force["xla"])
        timed = {xla: ready(first, xla)}
    else:
        timed = {xla: ready(first, xla) for xla in (False, True)}
        usable = [c for c in timed.values() if c is not None]
        _alternate(usable, _Candidate.measure)
        record("xla", usable)
        plain, compiled = timed[False], timed[True]
        if plain is None or compiled is None:
            xla = compiled is not None
        else:
            xla = compiled.best < MARGIN * plain.best
    if "size" in force:
        return Choice(xla, force["size"], rates)
    candidates = [timed[xla]] + [ready(size, xla) for size in sizes[1:]]
    candidates = [c for c in candidates if c is not None]
    if not candidates:
        return Choice(xla, first, rates)
    for candidate in candidates:
        candidate.best = float("inf")  # the sizes are timed together, in the same rounds
    _alternate(candidates, _Candidate.measure)
    record("size", candidates)
    best = max(c.rate for c in candidates)
    size = max(c.size for c in candidates if c.rate >= SIZE_MARGIN * best)
    return Choice(xla, size, rates)


def time_cnn(batch: int) -> bool:
    """Time the CNN's conv2 as one grouped convolution against separate ones
    (the module's docstring), cache the verdict for the machine and return it."""
    import tensorflow as tf

    from . import kernels

    models, size, cin, cout = CNN_MODELS, 14, 32, 64
    x = tf.random.normal([batch, size, size, cin * models])
    kernel = tf.Variable(tf.random.normal([5, 5, cin, cout * models]) * 0.05)

    def grouped(x: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(tf.nn.conv2d(x, kernel, 1, "SAME")))
        return tape.gradient(loss, kernel)

    def separate(x: tf.Tensor) -> tf.Tensor:
        xs = tf.split(x, models, axis=3)
        ks = tf.split(tf.convert_to_tensor(kernel), models, axis=3)
        with tf.GradientTape() as tape:
            tape.watch(ks)
            losses = [
                tf.reduce_sum(tf.square(tf.nn.conv2d(a, k, 1, "SAME")))
                for a, k in zip(xs, ks, strict=True)
            ]
            loss = tf.add_n(losses)
        return tf.concat(tape.gradient(loss, ks), axis=3)

    def seconds(fn: Callable) -> float:
        started = time.perf_counter()
        fn(x).numpy()
        return time.perf_counter() - started

    # A CPU has grouped convolutions only under XLA; a GPU has them in cuDNN.
    compiled = {
        "grouped": tf.function(grouped, jit_compile=not kernels.on_gpu()),
        "separate": tf.function(separate),
    }
    best = {}
    try:
        for name, fn in compiled.items():
            seconds(fn)  # trace, compile
            best[name] = seconds(fn)
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError):
        best["grouped"] = float("inf")
    if best["grouped"] < CNN_HOPELESS * best["separate"]:
        names = list(compiled)
        for round_ in range(ROUNDS):
            for name in names if round_ % 2 == 0 else names[::-1]:
                best[name] = min(best[name], seconds(compiled[name]))
    stacks = best["grouped"] < MARGIN * best["separate"]
    # With the seconds per call it was decided on (models, batch), to say why.
    seconds = {name: round(value, 4) for name, value in best.items()}
    verdict = {"stacks": stacks, "seconds": seconds, "models": models, "batch": batch}
    machine_cache.write(CACHE_FILE, _cnn_key(), verdict)
    return stacks
