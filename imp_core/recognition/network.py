"""LBR's recognition network: encoder (by config) + PSP decoder + segmentation head + multi-label head.

Module names follow LBR's ``PSPNetF`` (segmentation_models_pytorch 0.1.3 layout) so that official
recognition checkpoints load with ``strict=True``: ``encoder.*`` (torchvision-style ResNeXt keys),
``decoder.psp.blocks.{i}.pool.1.{0,1}.*``, ``decoder.conv.{0,1}.*``, ``seghead.0.*``, ``cls_head.2.*``.
The global descriptor is the max (or average) pooling of the last encoder map, as LBR's ``feat_max``.
No torchvision: the ResNeXt is built here.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import merge
from ..registry import Registry

ENCODERS = Registry("recognition encoder")


# ------------------------------------------------------------------------------------------------ encoders
class ConvBNReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1):
        super().__init__(
            nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class ResidualBlock(nn.Module):
    """Two 3x3 convs with a projection shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.conv1 = ConvBNReLU(cin, cout, stride, dilation)
        self.conv2 = nn.Sequential(
            nn.Conv2d(cout, cout, 3, 1, padding=dilation, dilation=dilation, bias=False), nn.BatchNorm2d(cout)
        )
        self.short = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(self.conv1(x)) + self.short(x))


@ENCODERS.register("small")
class SmallEncoder(nn.Module):
    """CPU-friendly residual CNN trained from scratch; output stride 8 (last stage dilated)."""

    default_conf = {"channels": [24, 48, 96, 160]}

    def __init__(self, conf: Mapping[str, Any]):
        super().__init__()
        c = list(conf.get("channels") or self.default_conf["channels"])
        if len(c) != 4:
            raise ValueError(f"recognition encoder 'small': 'channels' needs 4 values, got {c}")
        self.stem = ConvBNReLU(3, c[0], stride=2)
        self.stage1 = ResidualBlock(c[0], c[1], stride=2)
        self.stage2 = ResidualBlock(c[1], c[2], stride=2)
        self.stage3 = ResidualBlock(c[2], c[3], stride=1, dilation=2)
        self.out_channels = c[3]

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        f0 = self.stem(x)
        f1 = self.stage1(f0)
        f2 = self.stage2(f1)
        return [f0, f1, f2, self.stage3(f2)]


class Bottleneck(nn.Module):
    """torchvision's (v1.5) bottleneck, grouped for ResNeXt; attribute names match its state dict."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, groups: int, base_width: int,
                 downsample: Optional[nn.Module]):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


@ENCODERS.register("resnext101_32x4d")
class ResNeXtEncoder(nn.Module):
    """ResNeXt101-32x4d with the smp 0.1.3 ``ResNetEncoder`` layout (no fc/avgpool; layer4 kept in the
    state dict even when ``depth`` = 4 stops after layer3, as in LBR)."""

    default_conf = {"depth": 4, "layers": [3, 4, 23, 3], "groups": 32, "width_per_group": 4}

    def __init__(self, conf: Mapping[str, Any]):
        super().__init__()
        conf = {**self.default_conf, **{k: v for k, v in conf.items() if k in self.default_conf}}
        if conf["depth"] not in (3, 4, 5):
            raise ValueError(f"recognition encoder 'resnext101_32x4d': depth must be 3, 4 or 5, got {conf['depth']}")
        self.depth = int(conf["depth"])
        self._groups, self._width = int(conf["groups"]), int(conf["width_per_group"])
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        n1, n2, n3, n4 = conf["layers"]
        self.layer1 = self._make_layer(64, n1, 1)
        self.layer2 = self._make_layer(128, n2, 2)
        self.layer3 = self._make_layer(256, n3, 2)
        self.layer4 = self._make_layer(512, n4, 2)
        self.out_channels = [64, 256, 512, 1024, 2048][self.depth - 1]

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        down = None
        if stride != 1 or self.inplanes != planes * 4:
            down = nn.Sequential(nn.Conv2d(self.inplanes, planes * 4, 1, stride, bias=False),
                                 nn.BatchNorm2d(planes * 4))
        layers = [Bottleneck(self.inplanes, planes, stride, self._groups, self._width, down)]
        self.inplanes = planes * 4
        layers += [Bottleneck(self.inplanes, planes, 1, self._groups, self._width, None) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        feats = [self.relu(self.bn1(self.conv1(x)))]
        x = self.layer1(self.maxpool(feats[0]))
        feats.append(x)
        for layer in (self.layer2, self.layer3, self.layer4)[: self.depth - 2]:
            x = layer(x)
            feats.append(x)
        return feats


# ------------------------------------------------------------------------------------------------ decoder
class Conv2dReLU(nn.Sequential):
    """conv (+BN) + ReLU; without BN the conv has a bias and slot 1 is an Identity (smp layout)."""

    def __init__(self, cin: int, cout: int, use_bn: bool = True):
        super().__init__(
            nn.Conv2d(cin, cout, 1, bias=not use_bn),
            nn.BatchNorm2d(cout) if use_bn else nn.Identity(),
            nn.ReLU(inplace=True),
        )


class PSPBlock(nn.Module):
    def __init__(self, cin: int, cout: int, pool_size: int, use_bn: bool):
        super().__init__()
        # a 1x1 pooled map cannot be batch-normalised (smp drops BN there too)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(pool_size), Conv2dReLU(cin, cout, use_bn and pool_size > 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.pool(x), size=x.shape[-2:], mode="bilinear", align_corners=True)


class PSPModule(nn.Module):
    def __init__(self, cin: int, sizes=(1, 2, 3, 6), use_bn: bool = True):
        super().__init__()
        self.blocks = nn.ModuleList([PSPBlock(cin, cin // len(sizes), s, use_bn) for s in sizes])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([b(x) for b in self.blocks] + [x], dim=1)


class PSPDecoder(nn.Module):
    """Pyramid pooling over the last encoder map, then a 1x1 conv to ``out_channels``."""

    def __init__(self, cin: int, out_channels: int, use_bn: bool = True, dropout: float = 0.2):
        super().__init__()
        self.psp = PSPModule(cin, use_bn=use_bn)
        self.conv = Conv2dReLU(cin * 2, out_channels, use_bn)
        self.dropout = nn.Dropout2d(p=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.conv(self.psp(x)))


# ------------------------------------------------------------------------------------------------ model
class RecognitionNet(nn.Module):
    """``forward(x) -> {"masks": logits (B,C,h,w) at the decoder stride, "cls": (B,C) multi-label logits,
    "feat": last encoder map}``; ``classes`` counts background 0."""

    default_conf: Dict[str, Any] = {
        "encoder": "small",
        "encoder_conf": {},
        "classes": 2,
        "psp_out_channels": 128,
        "psp_dropout": 0.1,
        "global_pool": "max",  # LBR feat_max ("avg" for feat_avg)
        "input_bgr": False,  # True for official LBR checkpoints (trained on cv2 BGR images)
        "input_size": [160, 120],  # (w, h) the network sees at inference
    }
    mean: torch.Tensor  # (1,3,1,1) ImageNet statistics, non-persistent buffers registered in __init__
    std: torch.Tensor

    def __init__(self, conf: Optional[Mapping[str, Any]] = None):
        super().__init__()
        self.conf = merge(self.default_conf, conf, where="recognition.network")
        if int(self.conf["classes"]) < 2:
            raise ValueError("recognition.network.classes must be >= 2 (background + instances), "
                             f"got {self.conf['classes']}")
        if self.conf["global_pool"] not in ("max", "avg"):
            raise ValueError("recognition.network.global_pool must be 'max' or 'avg', "
                             f"got {self.conf['global_pool']!r}")
        self.encoder = ENCODERS.get(self.conf["encoder"])(dict(self.conf["encoder_conf"]))
        cin = self.encoder.out_channels
        classes = int(self.conf["classes"])
        self.decoder = PSPDecoder(cin, int(self.conf["psp_out_channels"]), dropout=float(self.conf["psp_dropout"]))
        self.seghead = nn.Sequential(nn.Conv2d(int(self.conf["psp_out_channels"]), classes, 3, padding=1))
        self.cls_head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes))
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    @property
    def num_classes(self) -> int:
        return int(self.conf["classes"])

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) RGB in [0,1] -> network input (channel order and ImageNet statistics)."""
        if self.conf["input_bgr"]:
            images = images.flip(1)
        return (images - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        feats = self.encoder(x)
        last = feats[-1]
        return {"masks": self.seghead(self.decoder(last)), "cls": self.cls_head(last), "feat": last}

    def global_descriptor(self, feat: torch.Tensor) -> torch.Tensor:
        pool = F.adaptive_max_pool2d if self.conf["global_pool"] == "max" else F.adaptive_avg_pool2d
        return F.normalize(pool(feat, 1).flatten(1), dim=1)


CHECKPOINT_FORMAT = "imp-recognition"


def save_model(path, net: RecognitionNet, extra: Optional[Mapping[str, Any]] = None) -> None:
    """State dict + conf (plain types only, so ``torch.load(weights_only=True)`` reads it back)."""
    blob = {"format": CHECKPOINT_FORMAT, "version": 1, "conf": dict(net.conf),
            "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()}}
    if extra:
        blob.update(extra)
    torch.save(blob, str(path))


def load_model(path, conf: Optional[Mapping[str, Any]] = None, device: str = "cpu") -> RecognitionNet:
    """Load our checkpoint (conf inside) or an official LBR state dict (``conf`` must then describe the
    layout, e.g. ``{"encoder": "resnext101_32x4d", "classes": 452, "psp_out_channels": 2048, "input_bgr": True}``)."""
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recognition model not found: {path}")
    try:
        blob = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - name the file whatever torch complains about
        raise ValueError(f"cannot read recognition checkpoint {path}: {e}") from e
    if isinstance(blob, dict) and blob.get("format") == CHECKPOINT_FORMAT:
        net_conf = merge(RecognitionNet.default_conf, blob["conf"], where=f"{path}:conf")
        if conf:
            net_conf = merge(net_conf, {k: v for k, v in conf.items() if k in ("input_size", "global_pool")})
        state = blob["state_dict"]
    elif isinstance(blob, dict) and blob and all(isinstance(v, torch.Tensor) for v in blob.values()):
        if not conf:
            raise ValueError(f"{path} is a bare state dict (official LBR weights?): pass the network conf "
                             "(encoder, classes, psp_out_channels, input_bgr)")
        net_conf = dict(conf)
        state = {k[7:] if k.startswith("module.") else k: v for k, v in blob.items()}
    else:
        raise ValueError(f"{path} is neither an imp recognition checkpoint nor a state dict")
    net = RecognitionNet(net_conf)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"recognition checkpoint {path} does not fit the network conf {net_conf}: {e}") from e
    return net.eval().to(device)
