"""The stage config schemas: one module per stage, each a tree of :class:`~rlhf.core.config.StrictModel`.

A stage's config model lives here, apart from its recipe in :mod:`rlhf.stages`, so that reading a config
(``rlhf config validate``, ``rlhf <command> --help``, the pipeline checking its sections) imports neither
torch nor the recipe. These modules import only pydantic and the torch-free settings models of the layers
below (``rlhf.core``, ``rlhf.labeling.config``, ...). The stage table (:data:`rlhf.stages.STAGES`) names each
stage's model as ``rlhf.configs.<module>:<Class>``.
"""
