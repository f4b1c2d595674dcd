"""One customer across channels: stitching identifiers (emails, devices, loyalty cards...) into
one customer key before features are computed.

Imports: ``inputs`` and the layers below it (``storage``, ``runtime``, ``config``, ``errors``).
"""
