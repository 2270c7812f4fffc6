"""The monitors' logic, framework-free: no Lightning, no Hugging Face ``Trainer`` (a test enforces it).

Each training loop drives it through a thin adapter that implements :class:`~lightning_inflect.core.host.Host`:
the Lightning callbacks in :mod:`lightning_inflect.callbacks`.
"""

from lightning_inflect.core.cka import CKADriftCore
from lightning_inflect.core.entropy import EntropyMonitorCore
from lightning_inflect.core.grads import GradientNormCore
from lightning_inflect.core.host import Host
from lightning_inflect.core.monitor import MonitorCore
from lightning_inflect.core.session import ProbeSession, flush_monitors

__all__ = [
    "CKADriftCore",
    "EntropyMonitorCore",
    "GradientNormCore",
    "Host",
    "MonitorCore",
    "ProbeSession",
    "flush_monitors",
]
