"""Tor onion services for Amanat. The only package that imports stem."""
