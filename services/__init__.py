"""Recmesh: an event-driven recommendation platform.

The `services/` folder is installed as the `recmesh` package. `recmesh.core` is the shared
runtime; each other sub-package is one independently deployable service. Services import
`recmesh.core` and never each other.
"""

__version__ = "0.1.0"
