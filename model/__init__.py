"""BN Lab's training core: MNIST, hand-written batch norm, the two networks, `train()`.

Importing this package (or `model.config`, `model.events`, `model.data`) does not
import TensorFlow; only `model.training`, `model.networks`, `model.batchnorm`
and `model.device` do.
"""

import os

# TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notices) is noise to
# our users; real errors still surface as Python exceptions.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
