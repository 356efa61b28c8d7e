"""The peer for bench/run.py: our generator (ctpet_srgan.models.build_generator) written in PyTorch, layer for layer.

Same layers, shapes, weights count and FLOPs: PET encoder conv 9x9 + PReLU; CT encoder (HR CT folded by
space-to-depth for ct_mode "s2d", or the LR CT for "lr") conv 9x9 + PReLU; concatenation + 1x1 merge conv; residual
blocks conv3 -> PReLU -> conv3 -> add (no batch norm); trunk conv3 + long skip; per x2 stage conv3 (4f) -> pixel
shuffle -> PReLU; one 3x3 head with a channel per output; global residuals (bilinear LR PET, the HR CT or bilinear LR
CT). This is what a BasicSR user would run: plain `torch.nn` modules in eager mode, NCHW by default.

`load_keras_weights` copies a Keras generator's weights in (kernels HWIO -> OIHW, the channel orders of TF's
depth_to_space / space_to_depth mapped onto torch's pixel_shuffle / pixel_unshuffle), so that tests can show the two
compute the same function, not only the same shapes. torch is a bench-only optional dependency
(bench/requirements-bench.txt): import this module only after `torch_available()`.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import time
from typing import Any, Callable

import numpy as np


def _hide_triton() -> None:
    """Keeps triton (GPU kernels only) out of a process that has loaded TensorFlow: importing triton's LLVM-based
    extension after TensorFlow's segfaults (torch 2.14 / triton 3.8 / TF 2.21), and torch's flop counter and
    torch.compile import it when it is installed. Without it torch takes the CPU paths it takes anyway."""
    if "triton" not in sys.modules:
        sys.modules["triton"] = None  # type: ignore[assignment]  # `import triton` raises ImportError


def _torch():
    """torch, imported with triton hidden (see _hide_triton)."""
    _hide_triton()
    import torch

    return torch


def torch_available() -> tuple[bool, str]:
    """(importable, why not): torch is optional; the bench skips the peer with this reason when it is absent."""
    _hide_triton()
    if importlib.util.find_spec("torch") is None:
        return False, "torch is not installed (pip install -r bench/requirements-bench.txt to run the PyTorch peer)"
    try:
        import torch  # noqa: F401
    except Exception as e:  # a broken install must not stop the rest of the bench
        return False, f"import torch failed: {type(e).__name__}: {e}"
    return True, ""


def _build_module_class():
    torch = _torch()
    import torch.nn.functional as F
    from torch import nn

    def conv(cin: int, cout: int, k: int) -> nn.Conv2d:
        return nn.Conv2d(cin, cout, k, padding=k // 2)

    class Block(nn.Module):
        def __init__(self, f: int):
            super().__init__()
            self.conv1, self.prelu, self.conv2 = conv(f, f, 3), nn.PReLU(f), conv(f, f, 3)

        def forward(self, x):
            return x + self.conv2(self.prelu(self.conv1(x)))

    class TorchGenerator(nn.Module):
        """forward(lr_pet, ct=None) -> (sr_pet, sr_ct or None); NCHW tensors, ct is hr_ct ("s2d") or lr_ct ("lr")."""

        def __init__(self, scale: int = 2, filters: int = 64, num_blocks: int = 16, ct_mode: str = "s2d"):
            super().__init__()
            s, f = scale, filters
            self.scale, self.ct_mode = s, ct_mode
            self.pet_enc_conv, self.pet_enc_prelu = conv(1, f, 9), nn.PReLU(f)
            if ct_mode != "none":
                self.ct_enc_conv = conv(s * s if ct_mode == "s2d" else 1, f, 9)
                self.ct_enc_prelu = nn.PReLU(f)
                self.merge_conv = conv(2 * f, f, 1)
            self.blocks = nn.ModuleList(Block(f) for _ in range(num_blocks))
            self.trunk_conv = conv(f, f, 3)
            n_up = int(math.log2(s))
            self.up_convs = nn.ModuleList(conv(f, 4 * f, 3) for _ in range(n_up))
            self.up_prelus = nn.ModuleList(nn.PReLU(f) for _ in range(n_up))
            self.head = conv(f, 1 if ct_mode == "none" else 2, 3)

        def forward(self, lr_pet, ct=None):
            s = self.scale
            x = self.pet_enc_prelu(self.pet_enc_conv(lr_pet))
            if self.ct_mode != "none":
                c = F.pixel_unshuffle(ct, s) if self.ct_mode == "s2d" else ct
                c = self.ct_enc_prelu(self.ct_enc_conv(c))
                x = self.merge_conv(torch.cat([x, c], dim=1))
            skip = x
            for b in self.blocks:
                x = b(x)
            x = skip + self.trunk_conv(x)
            for up, pr in zip(self.up_convs, self.up_prelus):
                x = pr(F.pixel_shuffle(up(x), 2))
            heads = self.head(x)
            bil = lambda t: F.interpolate(t, scale_factor=s, mode="bilinear", align_corners=False)  # noqa: E731
            sr_pet = heads[:, :1] + bil(lr_pet)
            if self.ct_mode == "none":
                return sr_pet, None
            return sr_pet, heads[:, 1:2] + (ct if self.ct_mode == "s2d" else bil(ct))

    return TorchGenerator


_CLASS = None


def build_torch_generator(gen_cfg) -> Any:
    """A TorchGenerator (torch.nn.Module) for a ctpet_srgan.models.GeneratorConfig, in eval mode, float32."""
    global _CLASS
    _CLASS = _CLASS or _build_module_class()
    return _CLASS(gen_cfg.scale, gen_cfg.filters, gen_cfg.num_blocks, gen_cfg.ct_mode).eval()


def parameter_count(module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def load_keras_weights(module, keras_model) -> None:
    """Copies the weights of a Keras generator of the same GeneratorConfig into `module` (in place).

    TF's depth_to_space puts output channel c of sub-pixel (dy, dx) at input channel (dy*2 + dx)*C + c; torch's
    pixel_shuffle takes it from c*4 + dy*2 + dx, so the upsampling convs' output channels are permuted. space_to_depth
    of the 1-channel HR CT orders its channels dy*r + dx in both frameworks."""
    torch = _torch()

    def w(name: str) -> list[np.ndarray]:
        return [np.asarray(v) for v in keras_model.get_layer(name).get_weights()]

    def set_conv(conv, name: str, out_perm: np.ndarray | None = None):
        k, b = w(name)
        k = np.transpose(k, (3, 2, 0, 1))  # HWIO -> OIHW
        if out_perm is not None:
            k, b = k[out_perm], b[out_perm]
        conv.weight.data = torch.from_numpy(np.ascontiguousarray(k))
        conv.bias.data = torch.from_numpy(np.ascontiguousarray(b))

    def set_prelu(prelu, name: str):
        prelu.weight.data = torch.from_numpy(np.ascontiguousarray(w(name)[0].reshape(-1)))

    m = module
    set_conv(m.pet_enc_conv, "pet_enc_conv")
    set_prelu(m.pet_enc_prelu, "pet_enc_prelu")
    if m.ct_mode != "none":
        set_conv(m.ct_enc_conv, "ct_enc_conv")
        set_prelu(m.ct_enc_prelu, "ct_enc_prelu")
        set_conv(m.merge_conv, "merge_conv")
    for i, b in enumerate(m.blocks):
        set_conv(b.conv1, f"res{i}_conv1")
        set_prelu(b.prelu, f"res{i}_prelu")
        set_conv(b.conv2, f"res{i}_conv2")
    set_conv(m.trunk_conv, "trunk_conv")
    f = m.trunk_conv.out_channels
    # torch channel t = c*4 + j (j = dy*2 + dx) must hold TF channel j*f + c
    perm = np.array([(t % 4) * f + t // 4 for t in range(4 * f)])
    for i, (up, pr) in enumerate(zip(m.up_convs, m.up_prelus)):
        set_conv(up, f"up{i}_conv", perm)
        set_prelu(pr, f"up{i}_prelu")
    set_conv(m.head, "head")


def to_nchw(x) -> Any:
    """A [B, H, W, C] array or tensor (NumPy, TF) -> a contiguous float32 torch tensor [B, C, H, W] (None -> None)."""
    torch = _torch()

    if x is None:
        return None
    return torch.from_numpy(np.array(np.transpose(np.asarray(x, np.float32), (0, 3, 1, 2)), order="C"))


def conv_flops(module, pet, ct) -> int:
    """FLOPs torch's own counter (torch.utils.flop_counter, convolutions only, 2 per multiply-add) gives one call."""
    torch = _torch()
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        module(pet, ct)
    return int(fc.get_total_flops())


MODES = ("eager", "channels_last", "compile")


def prepare_call(gen_cfg, pet_nhwc, ct_nhwc, *, threads: int, mode: str = "eager",
                 keras_model=None) -> tuple[Callable[[], np.ndarray], dict]:
    """A blocking, warmed-up call of the torch generator on the inputs bench/run.py feeds ours (NHWC, normalised
    units; ct is hr_ct, lr_ct or None as the config's ct_mode says), with keras_model's weights when given.

    mode: "eager" (NCHW, what BasicSR runs), "channels_last" (eager, NHWC memory format) or "compile"
    (torch.compile, inductor C++ code). threads: torch.set_num_threads (the caller passes TF's intra-op count).
    Returns (call, info); call() returns sr_pet as NHWC NumPy; info: mode, threads, torch version, parameters,
    conv_flops (torch's own count), warmup_s (first call, including compilation)."""
    if mode not in MODES:
        raise ValueError(f"unknown torch peer mode {mode!r}; one of {MODES}")
    torch = _torch()

    torch.set_num_threads(int(threads))
    model = build_torch_generator(gen_cfg)
    if keras_model is not None:
        load_keras_weights(model, keras_model)
    pet, ct = to_nchw(pet_nhwc), to_nchw(ct_nhwc)
    info = {"mode": mode, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "parameters": parameter_count(model), "conv_flops": conv_flops(model, pet, ct)}
    fn = model
    if mode == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        pet = pet.contiguous(memory_format=torch.channels_last)
        ct = None if ct is None else ct.contiguous(memory_format=torch.channels_last)
    elif mode == "compile":
        fn = torch.compile(model)

    def call() -> np.ndarray:
        with torch.inference_mode():
            out = fn(pet, ct)[0]
        return out.permute(0, 2, 3, 1).numpy()

    t = time.perf_counter()
    call()
    info["warmup_s"] = time.perf_counter() - t
    call()
    return call, info
