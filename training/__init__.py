"""The offline toolchain that makes tiny-starcoder: corpus -> tokenizer -> training -> evaluation
-> model card. Never imported by the app; the runtime that serves the result lives in model/.

    python -m training.train --help       # tokenizer + FIM pretraining, resumable
    python -m training.evaluate --help    # held-out bits/byte, FIM exact match, the model card
"""
