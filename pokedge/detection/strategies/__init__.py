"""Strategies that propose candidate card quads, each as a function returning a list of `Candidate`."""

from pokedge.detection.strategies.contours import propose_from_contours
from pokedge.detection.strategies.full_frame import propose_full_frame
from pokedge.detection.strategies.lines import propose_from_lines

__all__ = ["propose_from_contours", "propose_from_lines", "propose_full_frame"]
