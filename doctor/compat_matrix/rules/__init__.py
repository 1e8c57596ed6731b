"""Rules: small functions over Facts returning Findings."""
