"""Small utilities shared by every part of the toolkit: typed configs, atomic I/O, audio loading."""
