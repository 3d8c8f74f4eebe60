"""dsvbench: dataset distillation and coreset selection at tiny budgets (Deep Support Vectors, Table 1)."""
__version__ = "0.1.0"
