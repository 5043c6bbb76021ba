"""Scoring of translated test volumes: image quality and Dice on the evaluation grid, the trivial
mean-CT baseline, and the figure of each test volume."""
