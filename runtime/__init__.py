"""rtdetr-deploy runtime: run an exported RT-DETR ONNX model with onnxruntime, no torch."""
