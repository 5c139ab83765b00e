"""Distillation of a teacher upstream into small students: config, losses, objectives (the loop lives in training/)."""
