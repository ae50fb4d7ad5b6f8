"""On-device detection: the ONNX detector, model decoders, motion gate, tracker and zones."""
