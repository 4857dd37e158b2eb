"""Loading pretrained components offline, with one-line errors when they are missing.

Every model, tiny or real, goes through `load_pretrained`: a local folder or a
Hugging Face cache id, `from_pretrained(..., local_files_only=True)`. Nothing is
ever downloaded at run time.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from ddg_sweep.errors import UserError

# Real weights of the `paper` family: Hugging Face ids (or local folders via flags).
PAPER_MODELS = {
    "clip_vit-b16": "openai/clip-vit-base-patch16",
    "vit-base": "google/vit-base-patch16-224-in21k",
    "resnet50": "microsoft/resnet-50",
    "clip_teacher": "openai/clip-vit-large-patch14",
    "stable_diffusion": "CompVis/stable-diffusion-v1-4",
}


def _read_config(path: Path, subfolder: str | None, config_name: str) -> dict | None:
    config = path / subfolder / config_name if subfolder else path / config_name
    if not config.is_file():
        return None
    try:
        return json.loads(config.read_text())
    except (OSError, ValueError):
        raise UserError(f"{config} is not a readable JSON config; re-download or rebuild that model") from None


def check_model_kind(name_or_path: str, accepted: set[str], what: str, flag: str,
                     subfolder: str | None = None, key: str = "model_type",
                     config_name: str = "config.json") -> None:
    """If the model is a local folder, check its config names a model of the right kind."""
    path = Path(name_or_path).expanduser()
    if not path.exists():
        return  # a hub id: resolved from the cache by from_pretrained
    if not path.is_dir():
        raise UserError(f"{what} path {path} is not a folder; point {flag} at a model folder")
    config = _read_config(path, subfolder, config_name)
    if config is None:
        where = path / subfolder if subfolder else path
        raise UserError(f"{where} has no {config_name}: it is not a saved {what}; point {flag} at one")
    kind = config.get(key)
    if kind not in accepted:
        raise UserError(f"{path} holds a {kind!r} model, not a {what} ({' or '.join(sorted(accepted))}); "
                        f"point {flag} at the right folder")


def quiet_hf_logging() -> None:
    """Progress bars and load reports would drown a sweep's logs."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        import diffusers

        diffusers.utils.logging.set_verbosity_error()
        diffusers.utils.logging.disable_progress_bar()
    except ImportError:
        pass


def load_pretrained(loader: Callable, name_or_path: str, what: str, flag: str, **kwargs):
    """`loader(name_or_path, local_files_only=True, **kwargs)` with a friendly error."""
    quiet_hf_logging()
    path = Path(name_or_path).expanduser()
    source = str(path) if path.exists() else name_or_path
    if not path.exists() and (name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1):
        raise UserError(f"{what} folder {name_or_path} does not exist; point {flag} at a saved model folder")
    try:
        return loader(source, local_files_only=True, **kwargs)
    except (OSError, ValueError, EnvironmentError) as err:
        if path.exists():
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UserError(f"could not load {what} from {path}: {first}; point {flag} at a complete "
                            "saved model folder") from None
        raise UserError(
            f"{what} {name_or_path!r} is not in the local Hugging Face cache and nothing is downloaded "
            f"at run time: run `huggingface-cli download {name_or_path}` on a machine with internet "
            f"(copy the cache here), or point {flag} at a local folder"
        ) from None
