from edgeplan.compressor._vendor.onnx2torch.converter import convert
