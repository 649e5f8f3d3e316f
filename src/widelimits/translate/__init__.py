"""Helpers of `widelimits.from_module`: the torch activations and their widelimits layers."""
