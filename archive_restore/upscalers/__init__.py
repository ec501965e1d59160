"""The upscaler: which one a job uses, where its weights are found and how it is loaded (``upscaler``), and
the runtime that computes it on the CPU (``runtime``: torch, channels-last, ONNX Runtime, ncnn, half)."""
