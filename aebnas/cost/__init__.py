"""What a candidate COSTS: the operators a network runs, their MACs, measured latency tables, expected cost."""

from aebnas.cost.expected import expected_cost, path_costs
from aebnas.cost.macs import NetworkCost
from aebnas.cost.ops import NetworkOps, Op, network_cost, network_ops, space_ops

__all__ = ["NetworkCost", "NetworkOps", "Op", "expected_cost", "network_cost", "network_ops", "path_costs",
           "space_ops"]
