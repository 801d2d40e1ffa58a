"""Operators on populations of weights: selection, crossover, mutation, and the hidden-unit
permutations that line members up."""
