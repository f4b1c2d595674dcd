"""Typed configuration: ``conf/base.yaml`` plus an overlay plus ``--set`` overrides.

Every job loads its configuration here, once, into frozen pydantic (v2) models; nothing
downstream reads YAML, dictionaries or ``sys.argv``, and other modules only read attributes.

The models use pydantic rather than hand-written coercion so that types, defaults, the YAML
``return`` alias and the cross-field rules are declared next to the fields they concern, and a
well-kept library does the validation and reports each problem with its exact location
(``('rfm', 'segments', 0, 'r', 1)``). That location is turned into the key's full dotted path
(``rfm.segments[0].r[1]``) in one place, :func:`_config_error`, so every unknown key, wrong type
or impossible setting becomes a :class:`~segmentation.errors.ConfigError` naming the key.

Scalars are strict where YAML is unambiguous: a flag must be a YAML boolean, a count an integer
(not a float or a boolean), a number an integer or a float (not a boolean), a date a date or
``YYYY-MM-DD``. A string setting takes any scalar (``run_key: 2024`` is ``"2024"``). Lists
become tuples and mappings are read-only; assigning to a field raises. Copy a config with
``cfg.model_copy(update={...})``, which does not re-check it (:func:`validate` does). A section
built in code (``B2bTier("Small")``, positional values in field order as before) is checked
too, and raises pydantic's ``ValidationError``.

Typical usage example:

    cfg = load_config("conf/local.yaml", overrides=["training.k_max=7"])
    cfg.training.k_max  # 7

Imports: pydantic, PyYAML and ``segmentation.errors`` only: the bottom layer, which every
other package may read.
"""

from segmentation.config.attitudes import *  # noqa: F403
from segmentation.config.attitudes import __all__ as _attitudes
from segmentation.config.loading import (
    flatten,
    load_config,
    mask_uri,
    to_dict,
    validate,
)
from segmentation.config.models import *  # noqa: F403
from segmentation.config.models import __all__ as _models
from segmentation.config.types import Algorithm, EventFormat, Transform, join_path

__all__ = [
    *_models,
    *_attitudes,
    "Algorithm",
    "EventFormat",
    "Transform",
    "flatten",
    "join_path",
    "load_config",
    "mask_uri",
    "to_dict",
    "validate",
]
