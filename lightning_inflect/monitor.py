"""The public contract of an inflect monitor: what the probe session, the selectors and the injection read from one.

Framework-free (no Lightning import): :class:`InflectMonitor` is a :class:`typing.Protocol`, so the Lightning
monitors (:class:`~lightning_inflect.AttentionEntropyMonitor`, :class:`~lightning_inflect.GradientNormMonitor`,
:class:`~lightning_inflect.CKADriftMonitor`) satisfy it without inheriting from it, and so can a monitor of another
training loop. ``isinstance(obj, InflectMonitor)`` checks that the members exist (not their types).

Example:
    A minimal monitor that holds a history the InjectionCallback's selectors can read:

    >>> from lightning_inflect.history import MetricHistory
    >>> from lightning_inflect.names import ACT_GRAD_NORM
    >>> class Recorded:
    ...     metrics = (ACT_GRAD_NORM,)
    ...     every_n_steps, layers, log_key_prefix = 10, [0, 1], "inflect"
    ...     uses_probe, model_attr, layers_path = False, None, None
    ...     probe, probe_batches, probe_inputs = None, 1, None
    ...     def __init__(self):
    ...         self.history = {ACT_GRAD_NORM: MetricHistory((0, 1), [10], [[1.0, 0.5]])}
    ...     def due(self, step): return step % self.every_n_steps == 0
    ...     def probe_requests(self): return []
    ...     def same_probe(self, other): return True
    >>> isinstance(Recorded(), InflectMonitor)
    True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from lightning_inflect.capture.contract import ProbeRequest
    from lightning_inflect.history import MetricHistory

__all__ = ["InflectMonitor"]


@runtime_checkable
class InflectMonitor(Protocol):
    """What a monitor exposes to the code that shares its probe forward and reads its values.

    Read by the probe session (which monitors share one probe forward and one host transfer), by the InjectionCallback
    and its selectors (the histories), and by the TensorBoard layout (the metrics and the prefix). Every member is
    read-only for them; a monitor may keep them as plain attributes.

    Members:
        metrics: the per-block metric names it logs (constants of :mod:`lightning_inflect.names`), the keys of
            ``history``; two monitors with the same ``log_key_prefix`` must not share one.
        history: one :class:`~lightning_inflect.history.MetricHistory` per metric, over the blocks in ``layers``.
        every_n_steps: it logs on the optimizer steps ``due`` says, every ``every_n_steps``.
        layers: the block indices it monitors (valid once the model is known).
        log_key_prefix: the first part of each of its keys (``inflect``).
        uses_probe: whether it reads the shared probe forward; then ``probe_requests`` says what it needs.
        model_attr, layers_path: where the Hugging Face model and its blocks are (None: found automatically); every
            monitor of one run must agree.
        probe, probe_batches, probe_inputs: the probe options (a fixed probe, how many training batches form one,
            how a batch becomes model inputs); monitors that share a probe must agree (``same_probe``).
    """

    @property
    def metrics(self) -> tuple[str, ...]: ...

    @property
    def history(self) -> Mapping[str, MetricHistory]: ...

    @property
    def every_n_steps(self) -> int: ...

    @property
    def layers(self) -> Sequence[int]: ...

    @property
    def log_key_prefix(self) -> str: ...

    @property
    def uses_probe(self) -> bool: ...

    @property
    def model_attr(self) -> str | None: ...

    @property
    def layers_path(self) -> str | None: ...

    @property
    def probe(self) -> Sequence[Mapping[str, Any]] | None: ...

    @property
    def probe_batches(self) -> int: ...

    @property
    def probe_inputs(self) -> Callable[[Any], Mapping[str, Any]] | None: ...

    def due(self, step: int) -> bool:
        """Whether it logs at optimizer step ``step``."""
        ...

    def probe_requests(self) -> Sequence[ProbeRequest]:
        """What it needs from the shared probe forward on its logging steps (empty if it does not use the probe)."""
        ...

    def same_probe(self, other: InflectMonitor) -> bool:
        """Whether ``other``'s probe options match its own, so that both can share one probe forward."""
        ...
