"""nightear training: data sets, grouped splits, features through the edge front-end, a small
CNN, evaluation, ONNX export with metadata, INT8 quantization and the model card.

Needs the `train` extra (torch, onnx, scikit-learn). Driven from notebooks or
`python -m nightear_training`.
"""
