"""Fitting candidates: joint exit training and per-exit evaluation."""

from aebnas.train.device import resolve_device
from aebnas.train.losses import exit_loss_weights, joint_exit_loss
from aebnas.train.trainer import (TrainerSettings, TrainingDiverged, TrainStats, candidate_cudnn, fit, predict_logits,
                                  recalibrate_batchnorm)

__all__ = ["TrainStats", "TrainerSettings", "TrainingDiverged", "candidate_cudnn", "exit_loss_weights", "fit",
           "joint_exit_loss", "predict_logits", "recalibrate_batchnorm", "resolve_device"]
