"""pokedge: recognize Pokemon cards from a camera on the edge."""

__version__ = "0.1.0"
