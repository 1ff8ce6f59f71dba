"""tdphonon: temperature-dependent phonons with machine-learned potentials."""

__version__ = "0.1.0"
