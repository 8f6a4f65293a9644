"""The built-in VLA policy (LeRobot layout: configuration_vla.py + modeling_vla.py)."""

from vla_rft.policies.vla.configuration_vla import VLAConfig
from vla_rft.policies.vla.modeling_vla import VLAPolicy

__all__ = ["VLAConfig", "VLAPolicy"]
