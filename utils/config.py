"""The notebook's configuration: defaults, environment overrides, and choosing models and data.

Environment variables (all optional):
    PULLBACK_MODELS       "auto" (default: the paper's three models when their weights download,
                          else the bundled one), or a comma list such as "bundled" or "resnet50,vgg11_bn"
    IMAGENETTE_ROOT       folder with val/<wnid>/ (default: download Imagenette 160px into data/; offline,
                          the ten examples in data/examples/, which hold the paper's five images)
    PULLBACK_STEPS        ascent steps to show, e.g. "1,5,10"
    PULLBACK_TEMPERATURE  gate temperature T (default 0.3)
    PULLBACK_DEVICE       "cpu", "cuda", ... (default: CUDA when available)
    PULLBACK_MEDIA        output folder for figures (default media/; it may lie outside the clone)
    PULLBACK_DOWNLOAD     "0" (or "false", "no", "off"): never download Imagenette; without IMAGENETTE_ROOT the
                          notebook then uses the ten examples (`make test` sets it, so the tests stay offline)
"""
from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from .data import imagenette
from .data.imagenette import DEFAULT_DOWNLOAD_DIR, data_root_from_env, download_imagenette, example_files
from .paths import MEDIA, shown
from .models.zoo import PAPER_MODELS, PretrainedUnavailableError, default_device, load_model, offline_models



def env_flag(name: str, default: bool) -> bool:
    """A yes/no environment variable: "0", "false", "no", "off" (any case) are no, "1", "true", "yes", "on" yes."""
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in ("0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"{name}={os.environ[name]!r}: set it to 1 or 0 (or true / false)")


@dataclass
class Config:
    models: str = "auto"
    data_root: Path | None = None
    steps: tuple[int, ...] = (1, 5, 10)
    temperature: float = 0.3
    alpha: float = 20.0
    eps: float = 100.0
    device: torch.device = field(default_factory=default_device)
    media: Path = MEDIA
    download: bool = True

    def __repr__(self) -> str:
        """The settings, folders inside the clone named relative to it (the notebook shows this)."""
        values = ", ".join(f"{f.name}={shown(v)!r}" if isinstance(v, Path) else f"{f.name}={v!r}"
                           for f in fields(self) for v in [getattr(self, f.name)])
        return f"Config({values})"

    @classmethod
    def from_env(cls, **overrides) -> "Config":
        """Defaults, then environment variables, then ``overrides``."""
        env = os.environ
        values = dict(
            models=env.get("PULLBACK_MODELS", "auto").strip() or "auto",
            data_root=data_root_from_env(),
            steps=tuple(int(s) for s in env.get("PULLBACK_STEPS", "1,5,10").split(",")),
            temperature=float(env.get("PULLBACK_TEMPERATURE", 0.3)),
            device=torch.device(env["PULLBACK_DEVICE"]) if env.get("PULLBACK_DEVICE") else default_device(),
            media=Path(env.get("PULLBACK_MEDIA", MEDIA)),
            download=env_flag("PULLBACK_DOWNLOAD", default=True),
        )
        values.update(overrides)
        return cls(**values)


def choose_models(config: Config):
    """Load the configured models; returns ``(models by name, reason)`` where reason explains the choice."""
    if config.models == "auto":
        said = io.StringIO()  # torch.hub's "Downloading ... to <cache path>": shown once the weights arrive
        try:
            with contextlib.redirect_stdout(said):
                models = {name: load_model(name, config.device) for name in PAPER_MODELS}
            print(said.getvalue(), end="")
            return models, "the paper's models with ImageNet weights (IMAGENET1K_V1)"
        except PretrainedUnavailableError as error:
            names = offline_models()
            reason = (f"pretrained weights unavailable ({str(error).split(' (')[0]}): using the Imagenette "
                      f"model{'s' * (len(names) > 1)} trained here, " + ", ".join(map(repr, names)))
            return {name: load_model(name, config.device) for name in names}, reason
    names = [n.strip() for n in config.models.split(",") if n.strip()]
    return {name: load_model(name, config.device) for name in names}, f"models chosen by PULLBACK_MODELS={config.models}"


def choose_data(config: Config):
    """Where the images come from; returns ``(root, reason)``.

    ``$IMAGENETTE_ROOT`` if set, else a download of Imagenette 160px into ``data/`` (unless
    ``config.download`` is off), else the ten examples in ``data/examples`` (which hold the paper's five
    images; a root with ``val/`` only).
    """
    if config.data_root is not None:
        return Path(config.data_root), f"Imagenette from IMAGENETTE_ROOT={config.data_root}"
    if not config.download:
        failure = "was not downloaded (PULLBACK_DOWNLOAD=0)"
    else:
        try:
            root = download_imagenette(DEFAULT_DOWNLOAD_DIR)
            return root, f"Imagenette 160px downloaded into {shown(DEFAULT_DOWNLOAD_DIR)}"
        except Exception as error:  # no network: fall back to the examples beside the code
            failure = f"could not be downloaded ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
    try:
        example_files()
    except FileNotFoundError as missing:
        raise RuntimeError(f"Imagenette {failure} and {missing}") from missing
    return imagenette.EXAMPLES, (f"the ten example images in {shown(imagenette.EXAMPLES)} (one val image per class, "
                                 f"the paper's five among them): IMAGENETTE_ROOT is unset and Imagenette "
                                 f"{failure}")
