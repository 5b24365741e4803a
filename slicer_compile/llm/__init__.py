"""Decoder-only LLMs compiled for token-by-token split execution.

A model is compiled as a stack of parts, not as one graph cut once: the embedding,
one part per decoder layer (with explicit KV-cache inputs and outputs, a symbolic
sequence length, so that one graph serves the prefill and every decode step), and the
head (final norm and LM head). A cut is a decoder-layer boundary: the edge runs the
embedding and layers 1..ℓ, the server ℓ+1..L and the head; the residual stream (one
hidden vector per token) crosses, and each side keeps the KV cache of its own layers
(the *state* crossing kind, which travels only at a handover).
"""
