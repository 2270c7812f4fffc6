"""peft glue and optimizer surgery for injecting LoRA partway through training (no Lightning imports)."""

from lightning_inflect.injection.diagnostics import PROBE_METRICS, StepGradients, probe_diagnostics
from lightning_inflect.injection.lora import (
    ADAPTER_NAME,
    InjectionRecord,
    activate_lora,
    adapter_state,
    attach_dormant_lora,
    check_module_names,
    count_trainable,
    default_targets,
    existing_adapters,
    export_adapters,
    head_module_names,
    inject_lora,
    lora_parameters,
    lora_settings,
    plan_injection,
    resolve_targets,
    targeted_config,
)
from lightning_inflect.injection.optim import (
    add_parameter_group,
    drop_frozen_parameters,
    extend_scheduler,
    retarget_optimizer,
)
from lightning_inflect.injection.schedule import InjectionSchedule

__all__ = [
    "ADAPTER_NAME",
    "PROBE_METRICS",
    "InjectionRecord",
    "InjectionSchedule",
    "StepGradients",
    "activate_lora",
    "adapter_state",
    "add_parameter_group",
    "attach_dormant_lora",
    "check_module_names",
    "count_trainable",
    "default_targets",
    "drop_frozen_parameters",
    "existing_adapters",
    "export_adapters",
    "extend_scheduler",
    "head_module_names",
    "inject_lora",
    "lora_parameters",
    "lora_settings",
    "plan_injection",
    "probe_diagnostics",
    "resolve_targets",
    "retarget_optimizer",
    "targeted_config",
]
