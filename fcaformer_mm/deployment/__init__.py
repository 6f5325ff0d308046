"""Deployment helpers: running exported graphs outside PyTorch."""
