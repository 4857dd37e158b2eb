"""Loading pretrained components offline, with one-line errors when they are missing.

Every model, tiny or real, goes through `load_pretrained`: a local folder or a
Hugging Face cache id, `from_pretrained(..., local_files_only=True)`. Nothing is
ever downloaded at run time.
"""
from __future__ import annotations

import json
import logging
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

log = logging.getLogger("ddg_sweep.models")
_REPORTED: set = set()  # (what, source, unused keys) already logged by this process


def _read_config(path: Path, subfolder: str | None, config_name: str) -> dict | None:
    config = path / subfolder / config_name if subfolder else path / config_name
    if not config.is_file():
        return None
    try:
        return json.loads(config.read_text())
    except (OSError, ValueError):
        raise UserError(f"{config} is not a readable JSON config; re-download or rebuild that model") from None


def model_folder(name_or_path: str) -> Path | None:
    """A local folder as given, or a hub id's snapshot in the local cache; None if neither exists."""
    path = Path(name_or_path).expanduser()
    return path if path.exists() else cached_snapshot(name_or_path)


def not_cached_message(what: str, repo_id: str, flag: str) -> str:
    return (f"{what} {repo_id!r} is not in the local Hugging Face cache and nothing is downloaded "
            f"at run time: run `huggingface-cli download {repo_id}` on a machine with internet "
            f"(copy the cache here), or point {flag} at a local folder")


def model_kind_problem(name_or_path: str, accepted: set[str], what: str, flag: str,
                       subfolder: str | None = None, key: str = "model_type",
                       config_name: str = "config.json") -> str | None:
    """What is wrong with the config of a folder or cached hub id (None: the right kind, or not found)."""
    path = model_folder(name_or_path)
    if path is None:
        return None  # not found: the loader and the preflight say so in their own words
    if not path.is_dir():
        return f"{what} path {path} is not a folder; point {flag} at a model folder"
    try:
        config = _read_config(path, subfolder, config_name)
    except UserError as err:
        return str(err)
    if config is None:
        where = path / subfolder if subfolder else path
        return f"{where} has no {config_name}: it is not a saved {what}; point {flag} at one"
    kind = config.get(key)
    if kind not in accepted:
        return (f"{name_or_path} holds a {kind!r} model, not a {what} ({' or '.join(sorted(accepted))}); "
                f"point {flag} at the right folder or hub id")
    return None


def check_model_kind(name_or_path: str, accepted: set[str], what: str, flag: str, **where) -> None:
    """`model_kind_problem` as a UserError."""
    problem = model_kind_problem(name_or_path, accepted, what, flag, **where)
    if problem:
        raise UserError(problem)


def quiet_hf_logging() -> None:
    """Progress bars off and the libraries' chatter down to errors: a sweep's logs stay readable.

    This hides the libraries' own load reports, so `load_pretrained` reads every report itself:
    missing weights fail, unused ones are logged.
    """
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        import diffusers

        diffusers.utils.logging.set_verbosity_error()
        diffusers.utils.logging.disable_progress_bar()
    except ImportError:
        pass


def cached_snapshot(repo_id: str) -> Path | None:
    """The folder of `repo_id`'s `main` snapshot in the local Hugging Face cache, or None."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError, OSError):
        return None


def _listed(keys, limit: int = 4) -> str:
    keys = sorted(keys)
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def missing_weights_message(what: str, source: str, flag: str, missing, mismatched=()) -> str:
    problem = []
    if missing:
        problem.append(f"lacks {len(missing)} weight(s) the model needs ({_listed(missing)})")
    if mismatched:
        problem.append(f"has {len(mismatched)} of the wrong shape ({_listed(mismatched)})")
    return (f"{what} checkpoint {source} {' and '.join(problem)}: they would be randomly initialised; "
            f"re-download it or point {flag} at a complete model")


def check_loading_info(info: dict, what: str, source: str, flag: str) -> None:
    """Missing or mis-shaped weights are an error (they would be random); unused ones are logged once."""
    missing = set(info.get("missing_keys") or ())
    mismatched = {entry[0] if isinstance(entry, (tuple, list)) else entry
                  for entry in info.get("mismatched_keys") or ()}
    if missing or mismatched:
        raise UserError(missing_weights_message(what, source, flag, missing, mismatched))
    unexpected = frozenset(info.get("unexpected_keys") or ())
    if unexpected and (what, source, unexpected) not in _REPORTED:
        _REPORTED.add((what, source, unexpected))
        log.warning("%s: %d checkpoint weight(s) of %s are not used by the model (%s); expected when a "
                    "classification head or the other CLIP tower is dropped", what, len(unexpected), source,
                    _listed(unexpected))


def load_pretrained(loader: Callable, name_or_path: str, what: str, flag: str, weights: bool = True, **kwargs):
    """`loader(name_or_path, local_files_only=True, **kwargs)` with one-line errors.

    weights: the loader builds a model from a checkpoint (not a tokenizer or scheduler), whose
    loading report is checked by `check_loading_info`. Transformers models need
    `ignore_mismatched_sizes=True` from the caller: transformers then reports wrong shapes
    instead of raising a RuntimeError that names none (diffusers raises a ValueError naming them).
    """
    quiet_hf_logging()
    path = Path(name_or_path).expanduser()
    is_folder = path.exists()
    source = str(path) if is_folder else name_or_path
    if not is_folder and (name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1):
        raise UserError(f"{what} folder {name_or_path} does not exist; point {flag} at a saved model folder")
    if not is_folder and cached_snapshot(name_or_path) is None:
        raise UserError(not_cached_message(what, name_or_path, flag))
    try:
        loaded = loader(source, local_files_only=True, **({"output_loading_info": True} if weights else {}),
                        **kwargs)
    except (OSError, ValueError, EnvironmentError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        where = path if is_folder else f"{name_or_path!r} (local Hugging Face cache)"
        fix = f"point {flag} at a complete saved model folder" if is_folder else \
            f"re-download it (`huggingface-cli download {name_or_path}`) or point {flag} at a local folder"
        raise UserError(f"could not load {what} from {where}: {first}; {fix}") from None
    if not weights:
        return loaded
    model, info = loaded
    check_loading_info(info, what, source, flag)
    return model
