"""The shipped recipes (YAML) and accelerate launch configs (accelerate/), installed as package data."""
