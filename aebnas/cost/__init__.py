"""What a candidate COSTS: analytic MACs per exit path and the expected cost given exit rates."""

from aebnas.cost.expected import expected_cost
from aebnas.cost.macs import NetworkCost, network_cost

__all__ = ["NetworkCost", "expected_cost", "network_cost"]
