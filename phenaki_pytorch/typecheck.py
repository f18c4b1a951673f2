"""Runtime type checks for public entry points.

`typechecked` is beartype configured to raise a plain `TypeError` (naming the
parameter, the expected type and what came), so callers catch one exception type.
"""

from beartype import BeartypeConf, beartype

# is_pep484_tower: an int is accepted where a float is expected (cond_scale=3, fps=8)
typechecked = beartype(conf=BeartypeConf(violation_type=TypeError, is_color=False, is_pep484_tower=True))
