"""Publishing a model: promote to checkpoints/, pushing to the Hub, the model card and ONNX export
(serving from the Hub is audience.model.served)."""
