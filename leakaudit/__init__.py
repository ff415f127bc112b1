"""leakaudit: audit federated-learning models for gradient-inversion leakage."""

__version__ = "0.1.0"
