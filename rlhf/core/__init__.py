"""The bottom layer: typed strict configs (:mod:`.config`), run folders and lineage (:mod:`.artifacts`),
user-facing errors (:mod:`.errors`) and joining or starting Ray (:mod:`.cluster`).

Nothing here imports another part of ``rlhf``; every other layer may import it.
"""
