"""Projection heads mapping backbone features into the shared contrastive embedding space."""

from __future__ import annotations

from torch import Tensor, nn

from pimc.core.errors import ConfigError

__all__ = ["ProjectionHead"]


class ProjectionHead(nn.Module):
    """MLP head: ``(num_layers - 1) × [Linear → BatchNorm1d → ReLU]`` then a plain ``Linear``.

    This is the SimCLR (v2) / MoCo v3 convention rather than open_clip's (a single linear
    projection or a GELU MLP without normalisation). open_clip's towers are pretrained
    transformers fed batches of tens of thousands; PIMC trains BN-based CNNs from scratch with
    small CPU batches, where SimCLR's ablations show a non-linear BN head is what makes the
    backbone features good, and BN keeps the hidden activations well scaled from step one. The
    last layer has no BN or ReLU because the embedding is L2-normalised afterwards and must be
    able to take negative values. Call ``eval()`` before embedding single samples: BN refuses a
    batch of 1 in training mode.

    Args:
        in_dim: Backbone feature size.
        hidden_dim: Width of the hidden layers (unused when ``num_layers == 1``).
        out_dim: Embedding size D.
        num_layers: Linear layers in total; 1 gives a linear projection.

    Shapes:
        ``(B, in_dim)`` → ``(B, out_dim)``.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2) -> None:
        super().__init__()
        if num_layers < 1:
            raise ConfigError(f"ProjectionHead num_layers must be >= 1, got {num_layers}")
        for name, value in (("in_dim", in_dim), ("hidden_dim", hidden_dim), ("out_dim", out_dim)):
            if value < 1:
                raise ConfigError(f"ProjectionHead {name} must be >= 1, got {value}")
        self.in_dim, self.out_dim = in_dim, out_dim
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(num_layers - 1):
            # No bias: the following BatchNorm's shift makes it redundant.
            layers += [
                nn.Linear(dim, hidden_dim, bias=False),
                nn.BatchNorm1d(hidden_dim),
                nn.ReLU(inplace=True),
            ]
            dim = hidden_dim
        layers.append(nn.Linear(dim, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Project ``(B, in_dim)`` features to ``(B, out_dim)`` embeddings (not normalised)."""
        return self.net(x)
