"""fedsim: a discrete-event simulator of the cost of federated learning.

Real PyTorch training gives the accuracy of every round; a SimPy model of the
clients' links, devices and the server's link gives its time and traffic.
See docs/architecture.md for the data flow.
"""

import os

# PyTorch's OpenMP threads spin while waiting by default; on a machine whose
# cores are shared with other jobs that makes a training round 10x slower
# (docs/performance.md). Set before torch is first imported; users can override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# The one home of the version: pyproject.toml reads it (tool.setuptools.dynamic),
# `fedsim --version` prints it and every report's provenance.json records it.
__version__ = "0.1.0"

# The Python API (fedsim/api.py, docs/python-api.md), loaded on first use so that
# `import fedsim` stays light. (`study` and `replay` are subpackages' names: use
# fedsim.api.study / fedsim.api.replay.)
from fedsim import lazy as _lazy

__getattr__, __dir__ = _lazy.exports(globals(), dict.fromkeys(
    ("Result", "load_report", "load_scenario", "register_dataset", "register_method",
     "register_model", "run"), "fedsim.api"))
