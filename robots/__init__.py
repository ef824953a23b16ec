"""Robot drivers: the plugin API (`robots.api`), plugin discovery (`robots.plugins`), the command
guard (`robots.limits`), the built-in simulated robots (`robots.sim_arm`, `robots.sim_base`) and
the conformance kit for integrators (`robots.conformance`).

Depends on numpy and the standard library only.
"""
