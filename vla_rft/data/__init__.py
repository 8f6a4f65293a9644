"""Datasets: LeRobotDataset writing/reading in the project's contract, and chunk windows."""
