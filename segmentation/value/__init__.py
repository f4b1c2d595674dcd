"""Customer value: who will buy again and what each customer and segment is worth (BTYD
models: BG/NBD, Gamma-Gamma, CLV).

Imports: ``modeling`` and the layers below it.
"""
