"""Contrastive (SimCLR / DCL) training of small ResNets on curate's data. See :mod:`curate.train.simclr`."""

from curate.train.data import NegativeBank, SampleBatches, TensorBatches, images_tensor, run_samples
from curate.train.from_run import train_from_run
from curate.train.losses import MoCHi, contrastive_loss
from curate.train.model import ResNet, SimCLRNet, build_encoder
from curate.train.simclr import (MoCHiParams, TrainConfig, TrainResult, load_encoder, load_model, make_config,
                                 save_checkpoint, train)

__all__ = ["MoCHi", "MoCHiParams", "NegativeBank", "ResNet", "SampleBatches", "SimCLRNet", "TensorBatches",
           "TrainConfig", "TrainResult", "build_encoder", "contrastive_loss", "images_tensor", "load_encoder",
           "load_model", "make_config", "run_samples", "save_checkpoint", "train", "train_from_run"]
