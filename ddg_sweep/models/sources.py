"""Preflight of a job's models: resolvable offline, of the right kind, and no weight missing.

`check_model_sources` reads configs and safetensors headers, never a weight. Which weights
a model needs (names and shapes) comes from building it on PyTorch's meta device (no memory,
no initialisation) from its config, so the installed transformers and diffusers decide, as
they do when `hub.load_pretrained` loads it. A problem is one line naming the folder or repo
and the fix.
"""
from __future__ import annotations

import json
import re
import struct
from functools import lru_cache
from pathlib import Path

from ddg_sweep.errors import UserError
from ddg_sweep.models.hub import missing_weights_message, model_folder, model_kind_problem, not_cached_message

FLAGS = {"student": "--student-path", "clip_teacher": "--clip-path", "stable_diffusion": "--sd-path"}
TOKENIZER_FILES = (("vocab.json", "merges.txt"), ("tokenizer.json",))
# diffusers renames these attention weights of old checkpoints (SD v1.4's VAE) when it loads them
OLD_ATTENTION = re.compile(r"\.(query|key|value|proj_attn)\.(weight|bias)$")
NEW_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
SD_PARTS = (  # subfolder, library, class, accepted config kinds, config key
    ("unet", "diffusers", "UNet2DConditionModel", {"UNet2DConditionModel"}, "_class_name"),
    ("vae", "diffusers", "AutoencoderKL", {"AutoencoderKL"}, "_class_name"),
    ("text_encoder", "transformers", "CLIPTextModel", {"clip_text_model"}, "model_type"),
)


def check_model_sources(algorithm: str, hparams: dict, student_path: str | None = None,
                        clip_path: str | None = None, sd_path: str | None = None) -> list[str]:
    """One line per problem with the models a job of `algorithm` with `hparams` loads; [] if none.

    The same resolution as training (flags, else the tiny family's folders or the paper's hub
    ids in the local Hugging Face cache). Repeated calls with the same unchanged models are
    answered from memory.
    """
    from ddg_sweep.models.paths import resolve_model_paths

    try:
        paths = resolve_model_paths(algorithm, hparams, student_path, clip_path, sd_path)
    except UserError as err:
        return [str(err)]
    problems = []
    for role, source in paths.items():
        folder = model_folder(source)
        what = _what(role, hparams["backbone"])
        if folder is None:
            looks_like_path = source.startswith((".", "/", "~")) or source.count("/") > 1
            problems.append(f"{what} folder {source} does not exist; point {FLAGS[role]} at a saved model folder"
                            if looks_like_path else not_cached_message(what, source, FLAGS[role]))
            continue
        problems += _check_folder(role, hparams["backbone"], source, str(folder), _fingerprint(folder))
    return problems


def _what(role: str, backbone: str) -> str:
    return {"student": f"{backbone} student backbone", "clip_teacher": "CLIP teacher (image and text towers)",
            "stable_diffusion": "Stable Diffusion pipeline"}[role]


def _fingerprint(folder: Path) -> tuple:
    """Names, sizes and times of the folder's files: a changed model is checked again."""
    stats = []
    for path in sorted(folder.rglob("*")):
        try:
            stat = path.stat()  # follows the cache's snapshot links to their blobs
        except OSError:
            stats.append((str(path), None))
            continue
        stats.append((str(path), stat.st_size, stat.st_mtime_ns))
    return tuple(stats)


@lru_cache(maxsize=64)
def _check_folder(role: str, backbone: str, source: str, folder: str, fingerprint: tuple) -> list[str]:
    from ddg_sweep.models.student import BACKBONE_CLASSES

    flag, what, root = FLAGS[role], _what(role, backbone), Path(folder)
    if role == "student":
        class_name, accepted = BACKBONE_CLASSES[backbone]
        kind = model_kind_problem(source, accepted, what, flag)
        if kind:
            return [kind]
        kwargs = {"add_pooling_layer": False} if backbone == "vit-base" else {}
        return _weights_problems(root, None, "transformers", class_name, what, source, flag, kwargs)
    if role == "clip_teacher":
        kind = model_kind_problem(source, {"clip"}, what, flag)
        if kind:
            return [kind]
        return (_tokenizer_problems(root, None, what, source, flag)
                + _weights_problems(root, None, "transformers", "CLIPModel", what, source, flag, {}))
    kind = model_kind_problem(source, {"StableDiffusionPipeline"}, what, flag, key="_class_name",
                              config_name="model_index.json")
    if kind:
        return [kind]
    problems = _scheduler_problems(root, what, source, flag)
    problems += _tokenizer_problems(root, "tokenizer", what, source, flag)
    for sub, library, class_name, accepted, key in SD_PARTS:
        part = f"{what} {sub}"
        kind = model_kind_problem(source, accepted, part, flag, subfolder=sub, key=key)
        problems += [kind] if kind else _weights_problems(root, sub, library, class_name, part, source, flag, {})
    return problems


def _scheduler_problems(root: Path, what: str, source: str, flag: str) -> list[str]:
    config = root / "scheduler" / "scheduler_config.json"
    try:
        prediction = json.loads(config.read_text()).get("prediction_type", "epsilon")
    except (OSError, ValueError):
        return [f"{what} {source} has no readable scheduler/scheduler_config.json; re-download it or point "
                f"{flag} at a complete pipeline"]
    if prediction != "epsilon":
        return [f"{source} predicts {prediction!r}, not epsilon; DDG needs an epsilon-prediction Stable "
                "Diffusion (v1.x)"]
    return []


def _tokenizer_problems(root: Path, sub: str | None, what: str, source: str, flag: str) -> list[str]:
    folder = root / sub if sub else root
    if any(all((folder / name).is_file() for name in files) for files in TOKENIZER_FILES):
        return []
    where = f"{sub}/" if sub else ""
    return [f"{what} {source} has no tokenizer ({where}vocab.json and merges.txt, or {where}tokenizer.json); "
            f"re-download it or point {flag} at a complete model"]


def read_safetensors_header(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from a .safetensors file's header, checking the file is not truncated."""
    with open(path, "rb") as handle:
        size_bytes = handle.read(8)
        if len(size_bytes) < 8:
            raise ValueError("too short to be a safetensors file")
        (header_size,) = struct.unpack("<Q", size_bytes)
        header = json.loads(handle.read(header_size))
    header.pop("__metadata__", None)
    end = max((entry["data_offsets"][1] for entry in header.values()), default=0)
    if path.stat().st_size < 8 + header_size + end:
        raise ValueError(f"truncated: {path.stat().st_size} bytes of {8 + header_size + end}")
    return {name: tuple(entry["shape"]) for name, entry in header.items()}


def _saved_shapes(folder: Path, stem: str) -> dict[str, tuple[int, ...]] | None:
    """Shapes of every saved tensor (single or sharded safetensors); {} for a .bin; None: no weights."""
    single = folder / f"{stem}.safetensors"
    if single.is_file():
        return read_safetensors_header(single)
    index = folder / f"{stem}.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        shapes = {}
        for shard in shards:
            shapes.update(read_safetensors_header(folder / shard))
        return shapes
    bin_name = "pytorch_model.bin" if stem == "model" else f"{stem}.bin"
    return {} if (folder / bin_name).is_file() else None  # a pickle's names are not read without loading it


def _weights_problems(root: Path, sub: str | None, library: str, class_name: str, what: str, source: str,
                      flag: str, kwargs: dict) -> list[str]:
    folder = root / sub if sub else root
    stem = "model" if library == "transformers" else "diffusion_pytorch_model"
    try:
        saved = _saved_shapes(folder, stem)
    except (OSError, ValueError, KeyError) as err:
        return [f"{what} weights in {folder} are unreadable ({err}); re-download {source} or point {flag} "
                "at a complete model"]
    if saved is None:
        return [f"{what} {source} has no weights ({stem}.safetensors) in {folder}; re-download it or point "
                f"{flag} at a complete model"]
    if not saved:
        return []
    try:
        model = _meta_model(str(folder), library, class_name, tuple(kwargs.items()))
    except (OSError, ValueError, TypeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return [f"{what} config in {folder} cannot build a {class_name} ({first}); re-download {source} or "
                f"point {flag} at a complete model"]
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    loaded, converted = _loaded_names(model, library, saved, expected)
    ignored = tuple(getattr(model, "_keys_to_ignore_on_load_missing", None) or ())
    missing = [name for name in expected if name not in loaded and name not in converted
               and not any(re.search(pattern, name) for pattern in ignored)]
    wrong = [name for name, shape in loaded.items() if name in expected and shape != expected[name]]
    if not (missing or wrong):
        return []
    return [missing_weights_message(what, source, flag, missing, wrong)]


def _loaded_names(model, library: str, saved: dict, expected: dict) -> tuple[dict, set]:
    """(model weight name -> saved shape, names filled by a conversion that changes shapes).

    The checkpoint's names as the library renames them on load: diffusers' old attention names;
    transformers' conversion mapping of the model (its v5 renames) and base model prefix.
    """
    if library == "diffusers":
        renamed = {OLD_ATTENTION.sub(lambda m: f".{NEW_ATTENTION[m.group(1)]}.{m.group(2)}", name): shape
                   for name, shape in saved.items()}
        return renamed, set()
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key

    mapping = get_model_conversion_mapping(model)
    renamings = [entry for entry in mapping if isinstance(entry, WeightRenaming)]
    converters = [entry for entry in mapping if isinstance(entry, WeightConverter)]
    prefix = model.base_model_prefix
    loaded, converted = {}, set()
    for name, shape in saved.items():
        target, pattern = rename_source_key(name, renamings, converters, prefix, expected)
        if target not in expected and name in expected:  # as transformers does: maybe only the prefix
            target, pattern = rename_source_key(name, [], [], prefix, expected)
        if pattern is not None:
            converted.add(target)  # fused or split: its shape is the converter's business
        else:
            loaded[target] = shape
    return loaded, converted


def _meta_model(folder: str, library: str, class_name: str, kwargs: tuple):
    """The model built from its config on the meta device: its weights' names and shapes, no memory."""
    import torch

    if library == "transformers":
        import transformers

        cls = getattr(transformers, class_name)
        config = cls.config_class.from_pretrained(folder)
        with torch.device("meta"):
            return cls(config, **dict(kwargs))
    import diffusers

    cls = getattr(diffusers, class_name)
    with torch.device("meta"):
        return cls.from_config(cls.load_config(folder))
