"""Utilities of fcaformer_mm."""
from .collect_env import collect_env, format_env_report

__all__ = ['collect_env', 'format_env_report']
