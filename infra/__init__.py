"""Deployment and local running: the agera CLI, the local stack, SAM build targets."""
