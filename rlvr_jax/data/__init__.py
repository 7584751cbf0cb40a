"""Prompts and reference answers: embedded synthetic tasks, local dataset files and the iterator.

Host-side only: nothing in this package imports JAX.
"""
