"""Hooks of fcaformer_mm."""
from .deploy_hook import SwitchToDeployHook, switch_to_deploy

__all__ = ['SwitchToDeployHook', 'switch_to_deploy']
