"""The tables: contracts, Delta reads and writes, publishing, history, drift, maintenance.

Belongs here: ``tables`` (every output table's name, schema, partitioning, lineage: the one
place a contract is spelled), ``delta_tables`` (delta-spark I/O: replaceWhere snapshots,
transaction ids, MERGE), ``publishing`` (one segmentation's membership, SCD2 history,
migration and drift, in its documented order), ``history`` and ``drift`` (segments over time),
``delta_maintenance`` (VACUUM, OPTIMIZE, upgrades), ``files`` (reports beside the tables).
Imports: ``runtime``, ``config`` and ``errors``; never a stage above it.
"""
