"""Search over hyperparameters and structure: spaces, the outer GA, its baselines, the
trainer objective and the driver that runs any of them under one budget."""
