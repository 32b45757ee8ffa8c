"""The default model shipped with nightear (package data: <name>.onnx, .card.md, .metrics.json)."""
