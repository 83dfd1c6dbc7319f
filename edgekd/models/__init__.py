"""Model adapters and builders: architectures named in recipes, built through one registry."""
