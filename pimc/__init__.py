"""pimc: Pixel-wise Multimodal Contrastive learning for Sentinel-2 image time series."""

__version__ = "0.1.0"
