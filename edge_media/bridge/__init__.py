"""A call's caller leg joined to its bot leg: playout queue, routing and commands."""
