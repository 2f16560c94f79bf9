"""curate: turn raw image datasets into better training data for contrastive pretraining."""

__version__ = "0.1.0"
