"""One adapter per model family (tokenize → forward → post-process); each knows its checkpoint layout.

Adapters depend on the engine (plan, wrapping, batching); the engine never imports them.
"""
