"""Slow, obviously correct NumPy references for every kernel.

Loops over every index where that makes the definition plain. Shared by several test files:
add new references by appending to the end of this file.
"""
import numpy as np
