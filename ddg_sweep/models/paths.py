"""Which folder or hub id each component of a run is loaded from."""
from __future__ import annotations

from ddg_sweep.models.hub import PAPER_MODELS

TEACHER_ALGORITHMS = {"VL2V": ("clip_teacher",), "DDG": ("clip_teacher", "stable_diffusion")}


def resolve_model_paths(algorithm: str, hparams: dict, student_path=None, clip_path=None,
                        sd_path=None) -> dict:
    """Flags win; otherwise the tiny family's shipped folders or the paper's hub ids."""
    backbone = hparams["backbone"]
    needs = TEACHER_ALGORITHMS.get(algorithm, ())
    tiny = hparams["models"] == "tiny"
    paths = {}
    if tiny and not student_path:
        from ddg_sweep.models.tiny import tiny_student_path

        student_path = tiny_student_path(backbone)
    paths["student"] = student_path or PAPER_MODELS[backbone]
    if "clip_teacher" in needs:
        if tiny and not clip_path:
            from ddg_sweep.models.tiny import tiny_clip_teacher_path

            clip_path = tiny_clip_teacher_path()
        paths["clip_teacher"] = clip_path or PAPER_MODELS["clip_teacher"]
    if "stable_diffusion" in needs:
        if tiny and not sd_path:
            from ddg_sweep.models.tiny import tiny_sd_path

            sd_path = tiny_sd_path()
        paths["stable_diffusion"] = sd_path or PAPER_MODELS["stable_diffusion"]
    return paths
