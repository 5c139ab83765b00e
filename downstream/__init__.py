"""Downstream modules: the layer weighted sum and the task heads (each ``forward(features, lengths)``)."""
