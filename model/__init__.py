"""Everything about the language model: prompts, engines, loading, training.

Importing this package must stay cheap and torch-free; only model.loading,
model.local, model.worker's child and model.train import torch.
"""
