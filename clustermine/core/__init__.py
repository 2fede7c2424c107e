"""Foundations: errors, configuration, atomic storage, hashing, small linear algebra."""
