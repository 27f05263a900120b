"""VGG19 feature extractor: named layers, ImageNet input normalisation, three weight sources.

Weights:
- ``imagenet``: torchvision's ``VGG19_Weights.IMAGENET1K_V1`` (from the torch hub cache or downloaded);
- a path to a local file holding a VGG19 ``state_dict`` (full model or ``features`` only);
- ``random``: seeded random weights (torchvision's own init). Random VGG features are a known
  working choice for texture statistics; they are what tests, CI and the offline demo use.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from pst_core.errors import ConfigError

# torchvision's vgg19().features, index -> name
_BLOCKS = [2, 2, 4, 4, 4]
LAYER_NAMES: list[str] = []
for _b, _n in enumerate(_BLOCKS, start=1):
    for _i in range(1, _n + 1):
        LAYER_NAMES += [f"conv{_b}_{_i}", f"relu{_b}_{_i}"]
    LAYER_NAMES.append(f"pool{_b}")
LAYER_INDEX = {name: i for i, name in enumerate(LAYER_NAMES)}
# Total downsampling factor of each layer's output relative to the input.
LAYER_STRIDE = {name: 2 ** int(name[4]) if name.startswith("pool") else 2 ** (int(name[4]) - 1)
                for name in LAYER_NAMES}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_layers(layers: list[str], parameter: str = "features.layers") -> None:
    for name in layers:
        if name not in LAYER_INDEX:
            import difflib

            hint = difflib.get_close_matches(name, LAYER_NAMES, n=1)
            tip = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(f"{parameter}: unknown VGG19 layer {name!r}{tip}")


def weights_fingerprint(weights: str) -> str:
    """What identifies the weights in a cache key: the name, or a local file's content hash."""
    if weights in ("imagenet", "random"):
        return weights
    path = Path(weights)
    if not path.is_file():
        raise ConfigError(
            f"features.weights: {weights!r} is not 'imagenet', 'random' or an existing weights file"
        )
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def weights_id(weights: str, memo=None) -> str:
    """``weights_fingerprint``; a weights file's hash is memoised (by its path, size and times) through
    ``memo`` where given (``ArtifactStore.file_memo``), so planning a run does not re-read the file."""
    if memo is None or weights in ("imagenet", "random"):
        return weights_fingerprint(weights)
    return memo("weights", weights, lambda: {"fingerprint": weights_fingerprint(weights)})["fingerprint"]


def _load_state(weights: str) -> dict:
    if weights == "imagenet":
        from torchvision.models import VGG19_Weights

        try:
            return VGG19_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
        except Exception as exc:  # no network, no cache, corrupted download...
            raise ConfigError(
                "features.weights=imagenet: pretrained VGG19 weights could not be loaded "
                f"({type(exc).__name__}: {exc}); pass features.weights=PATH to a local VGG19 "
                "state_dict file, or features.weights=random for seeded random weights"
            ) from None
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"features.weights: cannot read {weights!r} as a VGG19 state_dict ({exc})") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    # Accept both a full vgg19 state_dict ("features.0.weight") and a features-only one ("0.weight").
    return {k if k.startswith(("features.", "classifier.")) else f"features.{k}": v for k, v in state.items()}


POOLINGS = ("max", "average")


class VGGFeatures(nn.Module):
    """VGG19 ``features`` truncated at the deepest layer asked for; returns named activations."""

    def __init__(self, body: nn.Sequential, fingerprint: str, pooling: str = "max"):
        super().__init__()
        self.body = body
        self.fingerprint = fingerprint
        self.pooling = pooling
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self._variants: dict[str, VGGFeatures] = {pooling: self}

    def with_pooling(self, pooling: str) -> "VGGFeatures":
        """The same convolutions (shared, not copied) with ``max`` or ``average`` 2x2 pooling.

        Average pooling passes every pixel a share of the gradient, where max pooling passes it to one
        pixel in four: with random weights, optimising an image through max pooling leaves pixel
        speckle, through average pooling it draws the style's structure (Gatys et al. 2015 preferred
        it for synthesis too). Activations are not rescaled: every loss is relative to its target.
        """
        if pooling not in POOLINGS:
            raise ConfigError(f"style_transfer.pooling: unknown pooling {pooling!r} (choose from {', '.join(POOLINGS)})")
        if pooling not in self._variants:
            pool = nn.AvgPool2d(2) if pooling == "average" else nn.MaxPool2d(2)
            body = nn.Sequential(*(pool if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) else m for m in self.body))
            variant = VGGFeatures(body, self.fingerprint, pooling).to(self.mean.device)
            variant.eval().requires_grad_(False)
            variant._variants = self._variants
            self._variants[pooling] = variant
        return self._variants[pooling]

    def forward(self, image: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
        """image: (N, 3, H, W) in [0, 1]. Returns {layer: (N, C, h, w)}."""
        wanted = set(layers)
        last = max(LAYER_INDEX[name] for name in layers)
        out: dict[str, torch.Tensor] = {}
        x = (image - self.mean) / self.std
        for index in range(last + 1):
            x = self.body[index](x)
            name = LAYER_NAMES[index]
            if name in wanted:
                out[name] = x
        return out


SEGMENTATION_MARGIN = 32  # pixels; a multiple of the deepest stride (16), so crops stay on the grid


def reflected_features(net: "VGGFeatures", image: torch.Tensor, layers: list[str],
                       margin: int = SEGMENTATION_MARGIN) -> dict[str, torch.Tensor]:
    """net's activations of image (N, 3, H, W) mirrored outwards by ``margin`` pixels, cropped back to
    the image: same shapes as net(image, layers), without the responses that the convolutions' zero
    padding puts along every border (which segmentation otherwise takes for a region of its own)."""
    h, w = image.shape[-2:]
    margin = min(margin, (min(h, w) - 1) // 16 * 16)
    if margin <= 0:
        return net(image, layers)
    out = net(F.pad(image, (margin, margin, margin, margin), mode="reflect"), layers)
    for name, act in out.items():
        stride = LAYER_STRIDE[name]
        top = margin // stride
        out[name] = act[..., top: top + h // stride, top: top + w // stride]
    return out


# torchvision's vgg19 configuration "E": output channels of each 3x3 convolution, "M" a 2x2 max pooling.
_VGG19 = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]


def _vgg19_body() -> nn.Sequential:
    """VGG19's ``features`` with the same indices as torchvision's, its weights not yet drawn (on the meta
    device; ``load_state_dict(assign=True)`` gives them). ReLUs are not in place: in-place ones would
    overwrite the conv outputs that callers ask for by name."""
    layers: list[nn.Module] = []
    channels = 3
    for v in _VGG19:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, v, kernel_size=3, padding=1, device="meta"), nn.ReLU(inplace=False)]
            channels = v
    return nn.Sequential(*layers)


def random_weights_file(seed: int) -> Path:
    return Path(torch.hub.get_dir()) / "pst" / f"vgg19-random-{seed}-torch{torch.__version__.split('+')[0]}.pt"


def _random_state(seed: int) -> dict:
    """torchvision's own init of vgg19, drawn from ``seed``: its ``features`` weights. Drawing them takes
    1.5-3 s here, most of it for the classifier's 120M weights that nothing uses (and ~0.5 GB of
    memory), so the features' share is kept in the torch hub cache (``random_weights_file``) and read
    back in ~0.06 s by later processes. Per torch version: that is what defines the draw."""
    path = random_weights_file(seed)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # not there yet, or unreadable: draw again
        pass
    from torchvision.models import vgg19

    # Seed a private generator so building a model never disturbs the caller's RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        state = vgg19(weights=None).features.state_dict()
    try:  # written whole, then renamed: a reader never sees a part of it
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache: draw again next time
    return state


@functools.lru_cache(maxsize=4)
def _build(weights: str, seed: int, device: str) -> VGGFeatures:
    if weights == "random":
        state = _random_state(seed)
    else:
        state = {k[len("features."):]: v for k, v in _load_state(weights).items() if k.startswith("features.")}
    body = _vgg19_body()
    try:
        body.load_state_dict(state, assign=True)
    except RuntimeError as exc:  # missing layers, or tensors of other shapes
        first = " ".join(str(exc).split())[:160]
        raise ConfigError(f"features.weights: {weights!r} is not a VGG19 state_dict ({first})") from None
    net = VGGFeatures(body, weights_fingerprint(weights) + (f":{seed}" if weights == "random" else ""))
    net.eval().requires_grad_(False)
    if str(device).startswith("cuda"):
        strict_cuda_numerics()
    return net.to(device)


_BUILDING = threading.Lock()


def load_vgg(weights: str = "imagenet", seed: int = 0, device: str = "cpu") -> VGGFeatures:
    """The shared (cached) VGG19 feature network for these weights; never trained, never mutated.
    Built under a lock: random weights are drawn from torch's global generator, which two threads
    building at once (two stages of a run, each the first to need the network) would share."""
    with _BUILDING:
        return _build(weights, seed, device)


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; a named device must exist here."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device={device!r} asked for, but CUDA is not available on this machine")
        index = torch.device(device).index
        if index is not None and index >= torch.cuda.device_count():
            raise ConfigError(f"device={device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def strict_cuda_numerics() -> None:
    """Full fp32 (no TF32) and deterministic cuDNN convolutions.

    The device is not part of any cache key, so an entry computed on a GPU must stand for what the
    CPU would compute: TF32 convolutions (cuDNN's default) differ from fp32 by ~1e-3 relative, and
    non-deterministic algorithms would make two runs of the same key disagree.
    """
    # The legacy flags: mixing them with the newer fp32_precision ones makes reading either raise.
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
