"""nightear: acoustic drone detection on the edge.

Stages, one module each: sources -> frontend -> classifier -> decision, wired by pipeline.
"""

import os

__version__ = "0.1.0"

# onnxruntime (1.32) otherwise writes a device id and an event database under
# ~/.cache/Microsoft/DeveloperTools and may send usage events: a unit at a border post keeps to
# itself. Set before onnxruntime is first imported; a caller's own setting wins.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
