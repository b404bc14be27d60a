"""aubench: benchmark CNNs and training settings for facial Action Unit detection."""

__version__ = "0.1.0"
