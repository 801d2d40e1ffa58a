"""The population engine: what a member is, its models, optimizers and metrics, and training
the population as one program over devices."""
