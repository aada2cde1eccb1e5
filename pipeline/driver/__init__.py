"""The driver's parts, all torch-free: the command line, planning, the Ray cluster, progress and summary.

`jobs/render.py` is the recipe that puts them together.
"""
