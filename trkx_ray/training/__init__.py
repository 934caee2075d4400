"""Training of the embedding, filter and GNN models (see :mod:`trkx_ray.training.trainer`)."""

from trkx_ray.training.config import TrainConfig, load_train_config

__all__ = ["TrainConfig", "Trainer", "load_train_config"]


def __getattr__(name: str):  # lazy: the trainer imports torch
    if name == "Trainer":
        from trkx_ray.training.trainer import Trainer

        return Trainer
    raise AttributeError(name)
