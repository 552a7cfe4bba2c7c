"""Helpers the tests share (import them from here; test modules never import each other)."""
