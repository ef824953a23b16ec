"""The built-in ``sim-base`` driver: a simulated differential-drive mobile base."""

from robots.sim_base.config import SimBaseConfig
from robots.sim_base.driver import SimBase

__all__ = ["SimBase", "SimBaseConfig"]
