"""Environments for multi-turn rollouts: what answers the model between its turns (a tool, a game)."""

from rltune.environments.base import ENVIRONMENTS, Environment, build_environment

__all__ = ["ENVIRONMENTS", "Environment", "build_environment"]
