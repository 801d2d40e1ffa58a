"""Integrations with other tools (optional extras; import the submodule you need).

- :mod:`genetic_dl.integrations.optuna`: the outer GA as an Optuna sampler
  (``pip install "genetic-dl[optuna]"``).
"""
