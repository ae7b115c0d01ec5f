"""Modules the benchmarks import: kept out of bench/ itself because ``make bench`` runs every
bench/*.py as a script, and these do nothing on their own."""
