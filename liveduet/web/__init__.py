"""The web studio: a second face of the engine (live page), the recordings and the generator."""
