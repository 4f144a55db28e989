"""Model-agnostic runtime: model resolution, the device/dtype plan, DeepSpeed wrapping, batching, limits.

Imports no model family and no web stack.
"""
