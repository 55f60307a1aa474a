"""Evaluation: automatic metrics and (later) GSB preference studies."""
