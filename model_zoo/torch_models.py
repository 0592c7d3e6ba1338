"""PyTorch modules and builders of the built-in zoo.

Imported only when a torch builder is resolved (the registrations refer to the
builders as "model_zoo.torch_models:build_*" strings), so that importing
`model_zoo` never imports torch.

Every builder returns a CPU module in eval mode whose weights are a pure
function of the model's fixed seed: building twice gives identical state dicts,
and building never touches the caller's global RNG state.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from torch import nn

# One fixed seed per model: adding or changing one model never changes another's weights.
SEEDS = {
    "simple": 1001,
    "mlp": 1002,
    "two_outputs": 1003,
    "cnn": 2001,
    "depthwise": 2002,
    "lstm": 3001,
    "gru": 3002,
    "transformer": 3003,
    "embedding": 3004,
}


def _seeded(name: str, make: Callable[[], nn.Module]) -> nn.Module:
    """`make()` run under the model's seed, without disturbing the global RNG;
    the result is on CPU and in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEEDS[name])
        model = make()
        randomize_batchnorms(model)
    return model.to("cpu").eval()


def randomize_batchnorms(model: nn.Module) -> None:
    """Give every BatchNorm non-trivial statistics and affine parameters, so
    that in eval mode it is not (close to) the identity and a converter that
    folds or drops it wrongly shows up in the outputs.

    Draws from the current global RNG: call it inside the builder's seeded block.
    """
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                n = module.num_features
                if module.track_running_stats:
                    module.running_mean.copy_(torch.randn(n) * 0.5)
                    module.running_var.copy_(torch.empty(n).uniform_(0.5, 2.0))
                if module.affine:
                    module.weight.copy_(torch.empty(n).uniform_(0.5, 1.5))
                    module.bias.copy_(torch.randn(n) * 0.3)


def calibrate_batchnorms(model: nn.Module, calibration: Callable[[np.random.Generator], dict], rng: np.random.Generator,
               batches: int = 4) -> nn.Module:
    """Give every BatchNorm the running statistics of its real input over
    `batches` calibration batches (cumulative averages: momentum None), as a
    trained network's are, and torch's default affine parameters (1, 0).

    The affine reset is needed because some libraries draw BatchNorm weights
    like other weights: transformers' EfficientNet init gives them N(0, 0.02),
    and with them every block shrinks its input ~50x, so the network's output
    is ~1e-33 whatever the input (measured) and no check on it could fail."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return model
    saved = [(m, m.momentum) for m in norms]
    with torch.no_grad():
        for norm in norms:
            norm.reset_parameters()  # statistics (0, 1) and affine (1, 0)
            norm.momentum = None
    # Only the BatchNorms in training mode: dropout stays off, so the statistics
    # are those of the eval-mode network and no global RNG is drawn from.
    model.eval()
    for norm in norms:
        norm.train()
    try:
        with torch.no_grad():
            for _ in range(batches):
                model(**{k: torch.from_numpy(v) for k, v in calibration(rng).items()})
    finally:
        for norm, momentum in saved:
            norm.momentum = momentum
        model.eval()
    return model


def build_seeded(seed: int, make: Callable[[], nn.Module],
                 calibration: Callable[[np.random.Generator], dict] | None = None) -> nn.Module:
    """A published architecture as its library initialises it: `make()` under
    `seed` (the global RNG left alone), its BatchNorms calibrated on
    `calibration(rng)` batches (keyword arguments of forward), in eval mode on
    the CPU."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make()
    if calibration is not None:
        calibrate_batchnorms(model, calibration, np.random.default_rng(seed))
    return model.to("cpu").eval()


def image_batches(size: tuple[int, int], domain: tuple[float, float], name: str,
                  batch: int = 8) -> Callable[[np.random.Generator], dict]:
    """Calibration batches of images within `domain`, as forward's keyword
    `name`, drawn the way the harness draws its examples (`make_tensor`), one
    of its distributions per batch in turn: statistics calibrated on one kind
    of input alone leave a deep network amplifying the others (torchvision's
    EfficientNet-B0, calibrated on normal draws, gave logits of 5.9e4 on
    uniform ones, with its own float32 error at 5% of them)."""
    from harness.inputs import DISTRIBUTIONS, make_tensor
    from harness.specs import InputSpec

    spec = InputSpec(name, (batch, 3, *size), domain=domain)
    turn = iter(range(1 << 30))

    def draw(rng: np.random.Generator) -> dict:
        distribution = DISTRIBUTIONS[next(turn) % len(DISTRIBUTIONS)]
        return {name: make_tensor(spec, spec.shape, distribution, 0.0, rng)}
    return draw


# --- basic ---------------------------------------------------------------------------


class SimpleModel(nn.Module):
    """The seed project's model: one Linear(3, 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(16, 64),
            nn.ReLU(),
            nn.Linear(64, 32),
            nn.GELU(),
            nn.Linear(32, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class TwoOutputClassifier(nn.Module):
    """Float logits of magnitude ~100 and their argmax as an int64 label.

    The head is scaled up and its bias centred on a calibration batch drawn
    from the input domain, so that the five classes are all common (15-24%
    each), a row's largest |logit| is typically ~75 (up to ~200), and the gap
    between the two largest logits has median ~22 and 1st percentile ~0.4:
    float32 noise (~1e-5 absolute at this scale on CPU) flips the argmax only
    on a vanishingly rare input (2e-5 of rows have a gap below 1e-3). No
    continuous model can rule near-ties out entirely; `label` is compared
    exactly.
    """

    SCALE = 250.0

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.Tanh())
        self.head = nn.Linear(32, 5)
        with torch.no_grad():
            self.head.weight.mul_(self.SCALE)
            calibration = torch.empty(4096, 8).uniform_(-4.0, 4.0)  # the input's domain
            logits = self.head(self.body(calibration))
            self.head.bias.sub_(logits.mean(dim=0))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.head(self.body(x))
        return logits, torch.argmax(logits, dim=-1)


def build_simple() -> nn.Module:
    return _seeded("simple", SimpleModel)


def build_mlp() -> nn.Module:
    return _seeded("mlp", MLP)


def build_two_outputs() -> nn.Module:
    return _seeded("two_outputs", TwoOutputClassifier)


# --- vision --------------------------------------------------------------------------


class SmallCNN(nn.Module):
    """Conv-BN-ReLU-MaxPool-Conv-BN-ReLU; [N,3,H,W] -> [N,16,H//2,W//2]."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2),  # floors: odd H/W lose their last row/column
            nn.Conv2d(8, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.features(image)


def _conv_bn_relu6(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(),
    )


class DepthwiseSeparable(nn.Module):
    """MobileNet v1 block: depthwise 3x3 (groups=C) then pointwise 1x1, each with BN + ReLU6."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.depthwise = _conv_bn_relu6(cin, cin, 3, stride=stride, groups=cin)
        self.pointwise = _conv_bn_relu6(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class TinyMobileNet(nn.Module):
    """Stem conv, two depthwise-separable blocks (the second strided), global
    average pool and a linear classifier; [N,3,H,W] -> [N,10]."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _conv_bn_relu6(3, 16, 3)
        self.blocks = nn.Sequential(DepthwiseSeparable(16, 32, stride=1), DepthwiseSeparable(32, 64, stride=2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(64, 10)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.blocks(self.stem(image)))
        return self.classifier(torch.flatten(x, 1))


def build_cnn() -> nn.Module:
    return _seeded("cnn", SmallCNN)


def build_depthwise() -> nn.Module:
    return _seeded("depthwise", TinyMobileNet)


# --- sequence ------------------------------------------------------------------------


class LSTMModel(nn.Module):
    """One-layer batch-first LSTM; [N,T,12] -> all hidden states [N,T,20]."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(input_size=12, hidden_size=20, num_layers=1, batch_first=True)

    def forward(self, sequence: torch.Tensor) -> torch.Tensor:
        hidden_states, _ = self.rnn(sequence)
        return hidden_states


class GRUModel(nn.Module):
    """Two-layer batch-first GRU; [N,T,12] -> last layer's hidden states [N,T,20]."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(input_size=12, hidden_size=20, num_layers=2, batch_first=True)

    def forward(self, sequence: torch.Tensor) -> torch.Tensor:
        hidden_states, _ = self.rnn(sequence)
        return hidden_states


class TransformerBlock(nn.Module):
    """A post-norm transformer encoder layer written out explicitly: q/k/v
    projections, scaled dot-product attention with softmax, output projection,
    residuals, LayerNorm and a GELU MLP; [N,T,32] -> [N,T,32].

    The same computation as nn.TransformerEncoderLayer(32, 4, 64, dropout=0,
    activation="gelu", batch_first=True), which is not used because the legacy
    TorchScript ONNX exporter (opset 17) fails on it in torch 2.13: without
    grad its eval fast path traces to aten::_transformer_encoder_layer_fwd
    (no ONNX symbolic), and with grad nn.MultiheadAttention's
    scaled_dot_product_attention call fails under tracing ("argument
    'is_causal' must be bool, not Tensor"). The dynamo exporter handles both.
    """

    def __init__(self, d_model: int = 32, heads: int = 4, d_ff: int = 64) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = d_model // heads
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.ff1 = nn.Linear(d_model, d_ff)
        self.ff2 = nn.Linear(d_ff, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        with torch.no_grad():  # LayerNorms that are not the identity
            for norm in (self.norm1, self.norm2):
                norm.weight.uniform_(0.5, 1.5)
                norm.bias.normal_(0.0, 0.2)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        # [N, T, D] -> [N, heads, T, head_dim]; -1 keeps T symbolic.
        return x.reshape(x.shape[0], -1, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(self.q(tokens)), self._split(self.k(tokens)), self._split(self.v(tokens))
        scores = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))
        attended = torch.matmul(torch.softmax(scores, dim=-1), v)
        attended = attended.transpose(1, 2).reshape(tokens.shape)
        x = self.norm1(tokens + self.out(attended))
        return self.norm2(x + self.ff2(nn.functional.gelu(self.ff1(x))))


class EmbeddingModel(nn.Module):
    """Token ids [N,T] (int64, vocab 100) -> embedding 16 -> per-token GELU MLP
    with a residual -> [N,T,16]."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(100, 16)
        self.mlp = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16))

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(token_ids)
        return x + self.mlp(x)


def build_lstm() -> nn.Module:
    return _seeded("lstm", LSTMModel)


def build_gru() -> nn.Module:
    return _seeded("gru", GRUModel)


def build_transformer() -> nn.Module:
    return _seeded("transformer", TransformerBlock)


def build_embedding() -> nn.Module:
    return _seeded("embedding", EmbeddingModel)
