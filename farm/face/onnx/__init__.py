"""The method's neural face models on onnxruntime: detection, recognition, swapping, parsing.

Users bring the weights (nothing ships on PyPI): `farm.face.catalogue` names each file with its
sha256, licence and where to get it; a models directory holds them. Sessions open inside the
worker on the providers `farm.face.onnx.runtime` picks for its device.
"""
