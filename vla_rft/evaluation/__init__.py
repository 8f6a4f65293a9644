"""Evaluation: success statistics with intervals, rollouts over task sets."""
