"""Are the bundles' networks as big as their papers and peers say, and as fast as the peers?

For every bundle network with an independent peer (candy-unet: nnU-Net's ``PlainConvUNet`` from
dynamic_network_architectures; candy-vnet: MONAI ``VNet``; candy-unetr: MONAI ``UNETR``; candy-unetpp: MONAI
``BasicUNetPlusPlus``; candy-mednext: MONAI's ``create_mednext``; candy-cmunext has none) this prints, side by side:

- the parameter counts of ours and the peer in the timed configuration, counting only the *effective* parameters
  (those that receive a gradient in the timed iteration: MONAI builds weights it never uses, e.g. UNETR's
  cross-attention norms and UNet++'s deep-supervision heads when deep supervision is off, and so do we for the
  heads). They must agree within 1%, else the exit status is 1;
- our count in the configuration a paper (or the issue's reference) publishes, against that number, with the
  source (meta device: no memory). A miss beyond the stated tolerance also gives exit status 1;
- the wall time of one training iteration (forward, mean-square loss, backward; the gradients are dropped
  before each iteration, as ``zero_grad`` does) of ours and the peer at one fixed input, interleaved round by
  round so that the load of other processes hits both alike: the fastest of ``--repeats`` (the least disturbed
  on a shared machine) and the ratio ours / peer of the fastest and of the medians. Process CPU time is not
  shown: with two threads on two busy cores it counts OpenMP's spin waits.
  Deep supervision is off on both sides; MONAI's V-Net dropout is set to 0 (ours has none).

The inputs, batch 1: 48^3 voxels (a multiple of 16 for the four poolings or the ViT's patches), 64^3 for the
U-Net (its five poolings leave 2^3 voxels, so that InstanceNorm has more than one) and CMUNeXt's 256x256 (its
paper's input); ``--quick`` uses the smallest inputs each architecture trains at.
Exit status 2 when MONAI is missing (install the ``bench`` extra); a bundle that is not installed is skipped.

Run: ``PYTHONPATH=core python benchmarks/networks.py [--repeats 3] [--threads 2] [--networks unet vnet ...]``
(about a minute and a half on 2 quiet cores); ``--quick`` is a smoke run of every path: narrow networks on small
inputs, one iteration each without warm-up (its ratios mean little).
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from torch import nn

CLASSES = 3
AGREEMENT = 0.01  # ours vs peer, effective parameters
Builder = Callable[[bool], nn.Module]  # quick -> network


@dataclass(frozen=True)
class Published:
    """A parameter count from the literature and the configuration of ours it describes."""

    millions: float
    tolerance: float  # relative
    source: str
    build: Callable[[], nn.Module]


@dataclass(frozen=True)
class Pair:
    """One bundle network, its peer (if any) and the input shape of the timed iteration (normal, quick)."""

    name: str
    module: str  # the bundle package; the row is skipped when it is not installed
    ours: Builder
    peer: Builder | None
    peer_name: str
    shape: tuple[int, ...]
    quick_shape: tuple[int, ...]
    published: Published | None
    note: str = ""


@dataclass
class Timing:
    """Per-iteration wall seconds, and the effective parameter count seen in the first backward."""

    wall: list[float] = field(default_factory=list)
    effective: int = 0

    @property
    def best_ms(self) -> float:
        return 1e3 * min(self.wall)

    @property
    def median_ms(self) -> float:
        return 1e3 * statistics.median(self.wall)


# --- the pairs ---------------------------------------------------------------------------------------------------

def _unet(quick: bool) -> nn.Module:
    from candy_unet.unet import make_unet3d
    return make_unet3d(1, CLASSES, hidden_chs=(8, 16, 32, 64) if quick else (32, 64, 128, 256, 320, 320))


def _plain_conv_unet(quick: bool) -> nn.Module:
    """nnU-Net v2's 3d_fullres network as its plans build it: 2 convs per stage, conv bias, affine InstanceNorm."""
    from dynamic_network_architectures.architectures.unet import PlainConvUNet
    widths = [8, 16, 32, 64] if quick else [32, 64, 128, 256, 320, 320]
    return PlainConvUNet(1, len(widths), widths, nn.Conv3d, 3, [1] + [2] * (len(widths) - 1), 2, CLASSES, 2,
                         conv_bias=True, norm_op=nn.InstanceNorm3d, norm_op_kwargs={"eps": 1e-5, "affine": True},
                         nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True})


MONAI_VNET_LAYOUT = {"down_convs": (1, 2, 3, 2), "up_convs": (2, 2, 1, 1), "act": "elu"}


def _vnet(quick: bool) -> nn.Module:
    from candy_vnet.vnet import make_vnet3d
    return make_vnet3d(1, CLASSES, **MONAI_VNET_LAYOUT)


def _monai_vnet(quick: bool) -> nn.Module:
    from monai.networks.nets import VNet
    return VNet(3, 1, CLASSES, dropout_prob_down=0.0, dropout_prob_up=(0.0, 0.0))


UNETR_QUICK = {"hidden_size": 48, "mlp_dim": 96, "num_heads": 2, "feature_size": 4}


def _unetr_size(quick: bool) -> tuple[int, ...]:
    """UNETR's position embedding fixes its input: the timed shape's spatial part."""
    pair = next(p for p in PAIRS if p.name == "unetr")
    return (pair.quick_shape if quick else pair.shape)[2:]


def _unetr(quick: bool) -> nn.Module:
    from candy_unetr.unetr import make_unetr3d
    return make_unetr3d(1, CLASSES, img_size=_unetr_size(quick), **(UNETR_QUICK if quick else {}))


def _monai_unetr(quick: bool) -> nn.Module:
    from monai.networks.nets import UNETR
    return UNETR(1, CLASSES, _unetr_size(quick), **(UNETR_QUICK if quick else {}))


def _unetpp_widths(quick: bool) -> tuple[int, ...]:
    return (4, 4, 8, 16, 32) if quick else (32, 32, 64, 128, 256)  # MONAI's default widths


def _unetpp(quick: bool) -> nn.Module:
    from candy_unetpp.unetpp import make_unetpp3d
    return make_unetpp3d(1, CLASSES, features=_unetpp_widths(quick))


def _monai_unetpp(quick: bool) -> nn.Module:
    from monai.networks.nets import BasicUNetPlusPlus
    widths = _unetpp_widths(quick)
    return BasicUNetPlusPlus(3, 1, CLASSES, features=(*widths, widths[0]))


def _mednext(quick: bool) -> nn.Module:
    from candy_mednext.mednext import make_mednext3d
    return make_mednext3d(1, CLASSES, variant="S", kernel_size=3, base_ch=8 if quick else 32)


def _monai_mednext(quick: bool) -> nn.Module:
    from monai.networks.nets import MedNeXt
    # create_mednext("S", kernel_size=3) is this with 32 filters: expansion 2 and 2 blocks everywhere, residuals
    return MedNeXt(3, 8 if quick else 32, 1, CLASSES, kernel_size=3, use_residual_connection=True)


def _cmunext(quick: bool) -> nn.Module:
    from candy_cmunext.cmunext import make_cmunext2d
    return make_cmunext2d(3, 1, variant="CMUNeXt-S" if quick else "CMUNeXt")


def _published_vnet() -> nn.Module:
    from candy_vnet.vnet import make_vnet3d
    return make_vnet3d(1, 1, **MONAI_VNET_LAYOUT)


def _published_unetr() -> nn.Module:
    from candy_unetr.unetr import make_unetr3d
    return make_unetr3d(1, 14, img_size=(96,) * 3)


def _published_unetpp() -> nn.Module:
    from candy_unetpp.unetpp import make_unetpp2d
    from mipcandy import LayerT
    return make_unetpp2d(1, 1, norm=False, act=LayerT(nn.ELU), dropout=0.5)


def _published_mednext() -> nn.Module:
    from candy_mednext.mednext import make_mednext3d
    return make_mednext3d(1, 3, variant="S", kernel_size=3)


def _published_cmunext() -> nn.Module:
    from candy_cmunext.cmunext import make_cmunext2d
    return make_cmunext2d(3, 1, variant="CMUNeXt")


PAIRS = (
    Pair("unet", "candy_unet", _unet, _plain_conv_unet, "nnU-Net PlainConvUNet", (1, 1, 64, 64, 64),
         (1, 1, 32, 32, 32), None,
         "no published count: nnU-Net's own class is the peer (31.2 M in 3d_fullres with 1 in, 3 out)"),
    Pair("vnet", "candy_vnet", _vnet, _monai_vnet, "MONAI VNet", (1, 1, 48, 48, 48), (2, 1, 16, 16, 16),
         Published(45.6, 0.01, "MONAI VNet() with 1 in / 1 out, MONAI's layout (1/2/3/2 down, 2/2/1/1 up, ELU); "
                               "issue 9", _published_vnet)),
    Pair("unetr", "candy_unetr", _unetr, _monai_unetr, "MONAI UNETR", (1, 1, 48, 48, 48), (1, 1, 32, 32, 32),
         Published(92.8, 0.01, "MONAI UNETR(1, 14, 96^3) less its unused cross-attention weights; issue 9",
                   _published_unetr),
         "ViT-B/16: counts depend on the input through the position embedding"),
    Pair("unetpp", "candy_unetpp", _unetpp, _monai_unetpp, "MONAI BasicUNetPlusPlus", (1, 1, 48, 48, 48),
         (1, 1, 32, 32, 32),
         Published(9.04, 1e-3, "Zhou et al. 2018, Table 2: 2D, widths 32-512, no norm, ELU, 1 in / 1 out",
                   _published_unetpp),
         "timed at MONAI's default 3D widths 32-32-64-128-256"),
    Pair("mednext", "candy_mednext", _mednext, _monai_mednext, "MONAI MedNeXt-S k3", (1, 1, 48, 48, 48),
         (1, 1, 32, 32, 32),
         Published(5.6, 0.02, "Roy et al. 2023, Table 1: MedNeXt-S, kernel 3, 3D, 1 in, 32 base channels",
                   _published_mednext)),
    Pair("cmunext", "candy_cmunext", _cmunext, None, "(no peer)", (1, 3, 256, 256), (1, 3, 64, 64),
         Published(3.14, 0.005, "Tang et al. 2024 (arXiv 2308.01239): CMUNeXt, 3 in / 1 out", _published_cmunext)),
)


# --- measuring ---------------------------------------------------------------------------------------------------

def count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def iteration(net: nn.Module, x: torch.Tensor) -> float:
    """One training iteration (gradients dropped, forward, mean-square loss, backward): its wall seconds."""
    for p in net.parameters():
        p.grad = None
    start = time.perf_counter()
    out = net(x)
    out = out[-1] if isinstance(out, (list, tuple)) else out  # MONAI's UNet++ answers with a list
    out.float().square().mean().backward()
    return time.perf_counter() - start


def effective_count(net: nn.Module) -> int:
    """Parameters that received a gradient in the last backward pass."""
    return sum(p.numel() for p in net.parameters() if p.grad is not None)


def time_pair(pair: Pair, quick: bool, repeats: int) -> dict[str, Timing]:
    """A warm-up round (unless quick), then ``repeats`` rounds alternating ours and the peer."""
    torch.manual_seed(0)
    nets = {"ours": pair.ours(quick).train()}
    if pair.peer is not None:
        nets["peer"] = pair.peer(quick).train()
    x = torch.randn(pair.quick_shape if quick else pair.shape)
    timings = {name: Timing() for name in nets}
    warmups = 0 if quick else 1
    for round_ in range(warmups + (1 if quick else repeats)):
        for name, net in nets.items():
            wall = iteration(net, x)
            if round_ == 0:
                timings[name].effective = effective_count(net)
            if round_ >= warmups:
                timings[name].wall.append(wall)
    return timings


def peer_available(pair: Pair) -> str | None:
    """Why the peer cannot run, or None."""
    if pair.peer is not _plain_conv_unet:
        return None
    try:
        import dynamic_network_architectures.architectures.unet  # noqa: F401
    except Exception as error:  # noqa: BLE001 - any import failure means the reference is unavailable
        return f"dynamic_network_architectures not importable ({error})"
    return None


def check_published(pairs: list[Pair]) -> bool:
    """Print our count in each published configuration against the number; True when all are within tolerance."""
    ok = True
    print("published parameter counts (ours in the paper's configuration):")
    for pair in pairs:
        if pair.published is None:
            print(f"  {pair.name:8s} {pair.note}")
            continue
        with torch.device("meta"):
            ours = count(pair.published.build()) / 1e6
        deviation = ours / pair.published.millions - 1
        good = abs(deviation) <= pair.published.tolerance
        ok &= good
        print(f"  {pair.name:8s} ours {ours:8.3f} M, published {pair.published.millions:7.2f} M "
              f"({deviation:+.2%}, tolerance {pair.published.tolerance:.1%}) {'ok' if good else 'MISMATCH'}: "
              f"{pair.published.source}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed iterations of each network, after a warm-up")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--networks", nargs="+", choices=[p.name for p in PAIRS], default=[p.name for p in PAIRS])
    parser.add_argument("--quick", action="store_true", help="narrow networks, small inputs, one iteration each")
    args = parser.parse_args(argv)
    if importlib.util.find_spec("monai") is None:
        print("MONAI is not importable; install the bench extra (pip install -e .[bench])", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    pairs = []
    for pair in PAIRS:
        if pair.name not in args.networks:
            continue
        if importlib.util.find_spec(pair.module) is None:
            print(f"{pair.name}: {pair.module} is not installed; skipped (pip install -e plugins/{pair.name})")
            continue
        if reason := peer_available(pair):
            print(f"{pair.name}: peer skipped: {reason}")
            pair = replace(pair, peer=None, peer_name="(peer missing)")
        pairs.append(pair)
    ok = check_published(pairs)
    runs = "1 iteration, no warm-up (quick)" if args.quick else f"{args.repeats} iterations after a warm-up"
    print(f"\nforward+backward per iteration on CPU, {args.threads} threads, {runs}; effective parameters; "
          "times are the fastest iteration")
    print(f"  {'network':8s} {'input':>16s} {'ours M':>8s} {'peer M':>8s}  {'ours ms':>9s} {'peer ms':>9s}  "
          f"{'ours/peer':>9s} {'median':>7s}  peer")
    for pair in pairs:
        timings = time_pair(pair, args.quick, args.repeats)
        ours, peer = timings["ours"], timings.get("peer")
        shape = "x".join(map(str, (pair.quick_shape if args.quick else pair.shape)[2:]))
        row = f"  {pair.name:8s} {shape:>16s} {ours.effective / 1e6:8.3f} "
        if peer is None:
            print(row + f"{'-':>8s}  {ours.best_ms:9.1f} {'-':>9s}  {'-':>9s} {'-':>7s}  {pair.peer_name}")
            continue
        agree = abs(ours.effective / peer.effective - 1) <= AGREEMENT
        ok &= agree
        print(row + f"{peer.effective / 1e6:8.3f}  {ours.best_ms:9.1f} {peer.best_ms:9.1f}  "
              f"{ours.best_ms / peer.best_ms:9.3f} {ours.median_ms / peer.median_ms:7.3f}  {pair.peer_name}"
              + ("" if agree else f"  COUNT MISMATCH (> {AGREEMENT:.0%})"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
