"""``leakaudit inspect`` (placeholder until detection lands)."""
