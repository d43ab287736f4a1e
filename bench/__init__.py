"""The benchmark suite: ``pytest bench/ --benchmark-only`` (PyTorch vs ONNX, latency and mAP).

A package so that pytest puts the repository root on ``sys.path`` and the suite imports
``bench.*``, ``finetune``, ``export`` and ``runtime`` from this checkout.
"""
