"""jobflow Makers of tdphonon (atomate2 style), one module per workflow concept.

* :mod:`tdphonon.flows.sscha`: :class:`SSCHAMaker`, temperature-dependent phonons.
"""

from tdphonon.flows.sscha import SSCHAMaker

__all__ = ["SSCHAMaker"]
