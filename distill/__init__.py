"""Distillation of a teacher upstream into small students: data, losses, objectives, the training loop, plots."""
