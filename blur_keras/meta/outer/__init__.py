"""Outer optimisers behind one interface (``base.OuterTrainer``): gradients with Adam,
CMA-ES and a simple ES, and how they spread over devices."""
