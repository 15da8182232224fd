"""fedsim: a discrete-event simulator of the cost of federated learning.

Real PyTorch training gives the accuracy of every round; a SimPy model of the
clients' links, devices and the server's link gives its time and traffic.
See docs/architecture.md for the data flow.
"""

__version__ = "0.1.0"
