"""Short, seeded pretraining of the tiny teachers on rendered digits.

The "web" here is digits drawn with PIL's bundled font (varied size, stroke, rotation,
shear, position, resolution) and styled in torch (random ink and paper colours, dark
grounds, outlines, textures, noise, blur), captioned "a photo of a digit 3." and a few
variants. None of it reuses the DemoDigits scans, so no held-out domain leaks in.

`train_clip` fits a transformers CLIPModel with the CLIP loss (class-level positives,
learned temperature); `train_vae` and `train_unet` fit the Stable Diffusion parts.
Everything draws from explicit generators, so a build is a function of its seed.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

SIZE = 32
DIGITS = tuple(range(10))
STYLES = ("plain", "dark", "outline", "textured")
# several words per style, as web captions would vary
STYLE_WORDS = {
    "plain": ("clean", "printed", "plain"),
    "dark": ("inverted", "dark", "negative"),
    "outline": ("sketch", "outline", "line drawing"),
    "textured": ("noisy", "textured", "grainy"),
}
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def class_caption(digit: int) -> str:
    return f"a photo of a digit {digit}."


def _caption(digit: int, style: str, rng: np.random.RandomState) -> str:
    word = STYLE_WORDS[style][rng.randint(len(STYLE_WORDS[style]))]
    templates = ("a photo of a digit {d}.", "a photo of a digit {d}.", "a {s} photo of a digit {d}.",
                 "a {s} image of a digit {d}.", "a picture of the digit {d}.", "the number {d}.")
    return templates[rng.randint(len(templates))].format(d=digit, s=word)


# ---------------------------------------------------------------------------- glyphs

def _glyph(digit: int, rng: np.random.RandomState) -> np.ndarray:
    """One digit as a 32x32 ink map in [0, 1]: font, stroke, slant, size, place, resolution vary."""
    from PIL import Image, ImageDraw, ImageFont

    canvas = Image.new("L", (64, 64), 0)
    font = ImageFont.load_default(size=int(rng.randint(24, 40)))
    ImageDraw.Draw(canvas).text((32, 32), str(digit), font=font, fill=255, anchor="mm",
                                stroke_width=int(rng.randint(0, 4)), stroke_fill=255)
    shear = rng.uniform(-0.3, 0.3)
    canvas = canvas.transform((64, 64), Image.AFFINE, (1, shear, -32 * shear, 0, 1, 0), Image.BILINEAR)
    canvas = canvas.rotate(rng.uniform(-15, 15), Image.BILINEAR)
    box = canvas.getbbox() or (0, 0, 64, 64)
    glyph = canvas.crop(box)
    height = int(rng.randint(20, 31))
    width = int(np.clip(round(height * glyph.width / glyph.height * rng.uniform(0.7, 1.3)), 6, 30))
    glyph = glyph.resize((width, height), Image.BILINEAR)
    out = Image.new("L", (SIZE, SIZE), 0)
    out.paste(glyph, ((SIZE - width) // 2 + int(rng.randint(-3, 4)), (SIZE - height) // 2 + int(rng.randint(-2, 3))))
    if rng.rand() < 0.6:  # a low-resolution source, upsampled
        low = int(rng.randint(7, 17))
        out = out.resize((low, low), Image.BILINEAR).resize((SIZE, SIZE), Image.BILINEAR)
    ink = np.asarray(out, dtype=np.float32)
    return ink / max(float(ink.max()), 1.0)


def render_glyphs(per_digit: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 1, 32, 32) ink maps and (N,) digit labels, N = 10 * per_digit."""
    rng = np.random.RandomState(seed)
    labels = np.repeat(np.array(DIGITS), per_digit)
    inks = np.stack([_glyph(int(d), rng) for d in labels])
    return torch.from_numpy(inks)[:, None], torch.from_numpy(labels)


# ---------------------------------------------------------------------------- styles

def _uniform(generator, shape, low, high):
    return low + (high - low) * torch.rand(shape, generator=generator)


def _texture(n: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 1, 32, 32) in [0, 1]: a random sum of two oriented waves and speckle."""
    yy, xx = torch.meshgrid(torch.arange(SIZE, dtype=torch.float32), torch.arange(SIZE, dtype=torch.float32),
                            indexing="ij")
    out = torch.zeros(n, 1, SIZE, SIZE)
    for _ in range(2):
        angle = _uniform(generator, (n, 1, 1, 1), 0, math.pi)
        freq = _uniform(generator, (n, 1, 1, 1), 0.3, 1.6)
        phase = _uniform(generator, (n, 1, 1, 1), 0, 2 * math.pi)
        out = out + 0.25 * (1 + torch.sin(freq * (xx * angle.cos() + yy * angle.sin()) + phase))
    speckle = torch.rand(n, 1, SIZE, SIZE, generator=generator)
    mix = _uniform(generator, (n, 1, 1, 1), 0, 0.6)
    return (1 - mix) * out + mix * speckle


def _blur(x: torch.Tensor, amount: torch.Tensor) -> torch.Tensor:
    """Per-sample blend towards a 3x3 box blur (amount in [0, 1])."""
    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return x + amount * (blurred - x)


def stylise(ink: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, list[str]]:
    """Ink maps (B, 1, 32, 32) -> RGB images in [0, 1] (B, 3, 32, 32) and each one's style."""
    n = len(ink)
    style_ids = torch.randint(len(STYLES), (n,), generator=generator)
    is_style = [(style_ids == i).view(n, 1, 1, 1).float() for i in range(len(STYLES))]
    plain, dark, outline, textured = is_style
    # outlines: the morphological gradient of the ink
    edges = (F.max_pool2d(ink, 3, 1, 1) + F.max_pool2d(-ink, 3, 1, 1)).clamp(0, 1)
    edges = (edges * _uniform(generator, (n, 1, 1, 1), 1.0, 2.0)).clamp(0, 1)
    ink = outline * edges + (1 - outline) * ink
    light = _uniform(generator, (n, 3, 1, 1), 0.65, 1.0)
    deep = _uniform(generator, (n, 3, 1, 1), 0.0, 0.4)
    grey = torch.rand(n, 1, 1, 1, generator=generator) < 0.5  # half the light/outline images untinted
    light = torch.where(grey, light.mean(1, keepdim=True).expand(-1, 3, -1, -1), light)
    deep_grey = torch.where(grey, deep.mean(1, keepdim=True).expand(-1, 3, -1, -1), deep)
    # plain and outline: dark ink on light paper; dark: light ink on a dark ground
    paper = (plain + outline) * light + dark * deep
    pen = (plain + outline) * deep_grey + dark * light
    # textured: ink of either polarity over a tinted texture
    texture = _texture(n, generator)
    tint_a, tint_b = torch.rand(n, 3, 1, 1, generator=generator), torch.rand(n, 3, 1, 1, generator=generator)
    ground = 0.2 + 0.6 * (tint_a + (tint_b - tint_a) * texture)
    bright_ink = torch.rand(n, 1, 1, 1, generator=generator) < 0.5
    textured_pen = torch.where(bright_ink, _uniform(generator, (n, 3, 1, 1), 0.8, 1.0),
                               _uniform(generator, (n, 3, 1, 1), 0.0, 0.2))
    paper = paper * (1 - textured) + ground * textured
    pen = pen * (1 - textured) + textured_pen * textured
    image = paper + ink * (pen - paper)
    noise_level = _uniform(generator, (n, 1, 1, 1), 0.0, 0.04) + textured * _uniform(generator, (n, 1, 1, 1), 0, 0.1)
    image = image + noise_level * torch.randn(image.shape, generator=generator)
    image = _blur(image, _uniform(generator, (n, 1, 1, 1), 0, 1) * (torch.rand(n, 1, 1, 1, generator=generator) < 0.3))
    return image.clamp(0, 1), [STYLES[i] for i in style_ids.tolist()]


class RenderedDigits:
    """A seeded bank of styled rendered digits, drawn in seeded random batches.

    Glyphs are rendered once and stylised once per copy (`styled_copies` looks each), so a
    training step only indexes the bank and shifts the images by a pixel or two.
    """

    def __init__(self, per_digit: int, seed: int, styled_copies: int = 4):
        inks, labels = render_glyphs(per_digit, seed)
        generator = torch.Generator().manual_seed(seed + 1)
        images, styles = [], []
        for _ in range(styled_copies):
            styled, names = stylise(inks, generator)
            images.append((styled * 255).round().to(torch.uint8))
            styles += names
        self.images = torch.cat(images)
        self.labels = labels.repeat(styled_copies)
        self.styles = styles
        self.plain = ((1 - inks) * 255).round().to(torch.uint8).repeat(styled_copies, 3, 1, 1)
        self.generator = generator

    def batch(self, size: int, plain_fraction: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """(size, 3, 32, 32) images in [0, 1], their digits and style names.

        `plain_fraction` of them are black ink on white paper (an easy start for a curriculum).
        """
        index = torch.randint(len(self.labels), (size,), generator=self.generator)
        plain = torch.rand(size, generator=self.generator) < plain_fraction
        images = torch.where(plain.view(-1, 1, 1, 1), self.plain[index], self.images[index]).float() / 255
        dy, dx = torch.randint(-2, 3, (2,), generator=self.generator).tolist()
        images = torch.roll(images, shifts=(dy, dx), dims=(2, 3))
        styles = ["plain" if p else self.styles[i] for i, p in zip(index.tolist(), plain.tolist())]
        return images, self.labels[index], styles


class CaptionTokens:
    """Token ids of captions, each tokenised once; a batch is padded to its longest caption."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: dict[str, list[int]] = {}

    def __call__(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        for caption in set(captions) - set(self.ids):
            self.ids[caption] = self.tokenizer(caption, truncation=True).input_ids
        longest = max(len(self.ids[c]) for c in captions)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([self.ids[c] + [pad] * (longest - len(self.ids[c])) for c in captions])
        mask = torch.tensor([[1] * len(self.ids[c]) + [0] * (longest - len(self.ids[c])) for c in captions])
        return ids, mask


def _lr_factor(step: int, steps: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def _set_lr(optimizer, base_lr: float, factor: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = base_lr * factor


# ---------------------------------------------------------------------------- CLIP

def clip_pixels(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (images - mean) / std


def train_clip(model, tokenizer, data: RenderedDigits, steps: int, batch_size: int, lr: float, seed: int,
               captions_per_digit: int = 3, curriculum: float = 0.5, spread_weight: float = 1.0) -> None:
    """The CLIP loss over a batch of images and a few captions per digit, every same-digit pair a positive.

    Captions are class-level, so a batch of image-caption pairs would repeat each caption many
    times; scoring the images against a small deduplicated caption set instead keeps the
    text tower's gradient strong enough to escape the near-collapsed random start.
    """
    rng = np.random.RandomState(seed)
    tokens = CaptionTokens(tokenizer)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}],
                                  lr=lr, betas=(0.9, 0.98))
    model.train()
    for step in range(steps):
        _set_lr(optimizer, lr, _lr_factor(step, steps, steps // 20))
        images, labels, styles = data.batch(batch_size, max(0.0, 1 - step / max(1.0, curriculum * steps)))
        caption_labels = torch.tensor(DIGITS).repeat_interleave(captions_per_digit)
        caption_styles = rng.randint(len(STYLES), size=len(caption_labels))
        captions = [_caption(int(d), STYLES[s], rng) for d, s in zip(caption_labels, caption_styles)]
        input_ids, attention_mask = tokens(captions)  # causal attention: padding never reaches the EOS token
        image_features = F.normalize(model.get_image_features(pixel_values=clip_pixels(images)).pooler_output, dim=-1)
        text_features = F.normalize(model.get_text_features(input_ids=input_ids,
                                                            attention_mask=attention_mask).pooler_output, dim=-1)
        logits = model.logit_scale.exp() * image_features @ text_features.t()
        same = (labels[:, None] == caption_labels[None, :]).float()
        image_to_text = torch.sum(-same / same.sum(1, keepdim=True) * logits.log_softmax(1), 1).mean()
        same = same.t()
        text_to_image = torch.sum(-same / same.sum(1, keepdim=True).clamp(min=1) * logits.t().log_softmax(1), 1)
        different = (caption_labels[:, None] != caption_labels[None, :]).float()
        spread = ((text_features @ text_features.t()) ** 2 * different).sum() / different.sum()
        loss = 0.5 * (image_to_text + text_to_image[same.sum(1) > 0].mean()) + spread_weight * spread
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
    model.eval()


# ---------------------------------------------------------------------------- Stable Diffusion

def train_vae(vae, data: RenderedDigits, steps: int, batch_size: int, lr: float, kl_weight: float,
              target_scale: float) -> None:
    """Reconstruction (L1 + MSE) + a small KL; then rescale so `target_scale * latent mean` has unit std."""
    optimizer = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(int(data.generator.initial_seed()) + 7)
    vae.train()
    for step in range(steps):
        _set_lr(optimizer, lr, _lr_factor(step, steps, steps // 20))
        images = data.batch(batch_size)[0] * 2 - 1
        posterior = vae.encode(images).latent_dist
        latents = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator)
        recon = vae.decode(latents).sample
        loss = (recon - images).abs().mean() + F.mse_loss(recon, images) + kl_weight * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    vae.eval()
    with torch.no_grad():
        means = torch.cat([vae.encode(data.batch(256)[0] * 2 - 1).latent_dist.mean for _ in range(4)])
        _rescale_latents(vae, 1.0 / (target_scale * float(means.std())))


@torch.no_grad()
def _rescale_latents(vae, factor: float) -> None:
    """Latent z -> factor * z, exactly: the encoder's mean rows scale, the decoder's input undoes it."""
    channels = vae.config.latent_channels
    vae.quant_conv.weight[:channels] *= factor
    vae.quant_conv.bias[:channels] *= factor
    vae.quant_conv.bias[channels:] += 2 * math.log(factor)  # log-variance of the scaled posterior
    vae.post_quant_conv.weight /= factor


def sd_captions(digit: int, style: str, rng: np.random.RandomState) -> str:
    """10% empty (the null prompt), 15% style only ('a sketch image', a domain prompt), else a class caption."""
    draw = rng.rand()
    if draw < 0.1:
        return ""
    if draw < 0.25:
        return f"a {STYLE_WORDS[style][rng.randint(len(STYLE_WORDS[style]))]} image"
    return _caption(digit, style, rng)


def train_unet(unet, vae, encode_prompts, alphas_cumprod: torch.Tensor, data: RenderedDigits, steps: int,
               batch_size: int, lr: float, latent_scale: float, seed: int) -> None:
    """Epsilon-prediction DDPM loss on VAE latent means, conditioned on the caption's text states.

    The VAE and text encoder are frozen: the bank's latents and each caption's states are computed once.
    """
    rng = np.random.RandomState(seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        latents = torch.cat([vae.encode(chunk.float() / 255 * 2 - 1).latent_dist.mean
                             for chunk in data.images.split(500)]) * latent_scale
    cache: dict[str, torch.Tensor] = {}

    def states(captions: list[str]) -> torch.Tensor:
        missing = sorted(set(captions) - set(cache))
        if missing:
            cache.update(zip(missing, encode_prompts(missing)))
        return torch.stack([cache[c] for c in captions])

    optimizer = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.0)
    unet.train()
    for step in range(steps):
        _set_lr(optimizer, lr, _lr_factor(step, steps, steps // 20))
        index = torch.randint(len(latents), (batch_size,), generator=generator)
        x0 = latents[index]
        cond = states([sd_captions(int(data.labels[i]), data.styles[i], rng) for i in index.tolist()])
        t = torch.randint(len(alphas_cumprod), (batch_size,), generator=generator)
        eps = torch.randn(x0.shape, generator=generator)
        abar = alphas_cumprod[t].view(-1, 1, 1, 1)
        x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
        loss = F.mse_loss(unet(x_t, t, encoder_hidden_states=cond).sample, eps)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    unet.eval()
