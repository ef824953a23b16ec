"""The built-in ``sim-arm`` driver: a simulated 6-joint arm with a gripper."""

from robots.sim_arm.config import SimArmConfig
from robots.sim_arm.driver import SimArm

__all__ = ["SimArm", "SimArmConfig"]
