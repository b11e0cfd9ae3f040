"""BN Lab's training core: MNIST, hand-written batch norm, the two networks, `train()`.

Importing this package (or `bnlab.model.config`, `.events`, `.data`) does not
import TensorFlow; only `.training`, `.networks`, `.batchnorm`
and `.device` do.
"""

from . import environment

# Before any module of this package imports TensorFlow: its log level and CUDA's
# kernel cache are read when it starts (bnlab.model.environment).
environment.prepare()
