"""Thin Hydra entry points; they wire config to the packages and turn bad input into one-line errors."""
