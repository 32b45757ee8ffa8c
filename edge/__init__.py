"""nightear: acoustic drone detection on the edge.

Stages, one module each: sources -> frontend -> classifier -> decision, wired by pipeline.
"""

__version__ = "0.1.0"
