"""Finding cards in frames and warping them flat and upright."""

from pokedge.detection.detector import CardDetector, DetectorConfig
from pokedge.detection.types import CARD_ASPECT, CARD_HEIGHT, CARD_WIDTH, Detection

__all__ = ["CardDetector", "DetectorConfig", "Detection", "CARD_ASPECT", "CARD_WIDTH", "CARD_HEIGHT"]
