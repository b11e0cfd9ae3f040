"""BN Lab's training core: MNIST, hand-written batch norm, the two networks, `train()`.

Importing this package (or `bnlab.model.config`, `.events`, `.data`) does not
import TensorFlow; only `.training`, `.networks`, `.batchnorm`
and `.device` do.
"""

import os

# TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notices) is noise to
# our users; real errors still surface as Python exceptions.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
