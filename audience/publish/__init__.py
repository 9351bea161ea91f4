"""Publishing a model: promote to checkpoints/, serving from the Hub, pushing to the Hub, the
model card and ONNX export."""
