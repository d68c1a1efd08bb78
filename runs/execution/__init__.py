"""How runs execute: one backend per mode (registry.BACKENDS), one supervision loop for all
(base.execute). services.run_execute turns a claimed run into a RunSpec and hands it over; a
backend never touches the database, it reports through the Supervision callbacks.

Only the registry is imported here: the models list the modes without loading any backend.
"""

from runs.execution.registry import BACKENDS, MODES, UnknownMode, get_backend

__all__ = ["BACKENDS", "MODES", "UnknownMode", "get_backend"]
