"""The node's control plane: its registry entry, SQS command consumers, call records and metrics."""
