"""The runtime around the language model: families and prompts, engines, loading, the registry.

Importing this package must stay cheap and torch-free: torch comes in only where a model runs
(model.engines.loading, model.engines.local, the worker's child). Training the embedded model is training/'s job.
"""
