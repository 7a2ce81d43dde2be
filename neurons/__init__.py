"""neurons: small neural networks from scratch on Numba.

>>> import neurons
>>> net = (neurons.Network((4,)).dense(16, "relu").dense(3, "softmax")
...        .set_optimizer(neurons.optimizers.Adam(lr=0.01)).set_objective("cross_entropy"))
>>> trained = net.learn(x, y, epochs=50)                      # doctest: +SKIP
"""
from . import _cache

_cache.install()        # before anything compiles: several processes may share the kernel cache

from . import activations, datasets, layers, objectives, optimizers, schedules
from .activations import Activation
from .io import load, save
from .network import Loopback, Network, Skip
from .objectives import Objective
from .sweep import SweepError, sweep  # Dask itself is imported by sweep() only
from .training import History, Trained, TrainingError, TrainingInterrupted

__version__ = "0.1.0"
__all__ = ["Network", "Trained", "History", "TrainingError", "TrainingInterrupted", "Activation", "Objective", "Skip", "Loopback",
           "activations", "objectives", "optimizers", "schedules", "layers", "datasets", "save", "load",
           "sweep", "SweepError"]
