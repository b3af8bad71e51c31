"""Plots and tables shared by the stages (matplotlib with the Agg backend: no display needed)."""
