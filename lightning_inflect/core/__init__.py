"""The monitors' and the injection's logic, framework-free: no Lightning, no Hugging Face ``Trainer`` (a test
enforces it).

Each training loop drives it through a thin adapter that implements :class:`~lightning_inflect.core.host.Host`
(:class:`~lightning_inflect.core.injection.InjectionHost` for the injection): the Lightning callbacks in
:mod:`lightning_inflect.callbacks`, the Hugging Face ``Trainer`` callbacks in
:mod:`lightning_inflect.integrations.transformers`.
"""

from lightning_inflect.core.cka import CKADriftCore
from lightning_inflect.core.entropy import EntropyMonitorCore
from lightning_inflect.core.grads import GradientNormCore
from lightning_inflect.core.host import Host
from lightning_inflect.core.injection import InjectionCore, InjectionHost
from lightning_inflect.core.monitor import MonitorCore
from lightning_inflect.core.selector_inputs import SelectorInputs
from lightning_inflect.core.session import ProbeSession, flush_monitors

__all__ = [
    "CKADriftCore",
    "EntropyMonitorCore",
    "GradientNormCore",
    "Host",
    "InjectionCore",
    "InjectionHost",
    "MonitorCore",
    "ProbeSession",
    "SelectorInputs",
    "flush_monitors",
]
