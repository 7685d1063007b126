"""Turning frame results into the JSON objects and tables that `pokedge scan` prints."""

from __future__ import annotations

from typing import Any

from pokedge.gallery.index import Hit
from pokedge.gallery.store import Gallery
from pokedge.recognition.decision import MATCH
from pokedge.recognition.pipeline import CardResult, FrameResult


def hit_dict(hit: Hit, gallery: Gallery) -> dict[str, Any]:
    card = gallery.cards[hit.card_id]
    return {
        "card_id": hit.card_id,
        "name": card.name,
        "set_id": card.set_id,
        "set_name": card.set_name,
        "number": card.number,
        "score": round(hit.score, 4),
    }


def card_dict(card: CardResult, gallery: Gallery) -> dict[str, Any]:
    """Describe one card; an unknown card has null id fields and its best guesses in `alternatives`."""
    matched = card.status == MATCH
    top = hit_dict(card.hits[0], gallery) if card.hits else {}
    return {
        "card_id": top.get("card_id") if matched else None,
        "name": top.get("name") if matched else None,
        "set_id": top.get("set_id") if matched else None,
        "set_name": top.get("set_name") if matched else None,
        "number": top.get("number") if matched else None,
        "score": round(card.score, 4),
        "margin": round(card.margin, 4),
        "status": card.status,
        "quad": [[round(float(x), 1), round(float(y), 1)] for x, y in card.quad],
        "alternatives": [hit_dict(h, gallery) for h in card.hits],
        "same_art": card.same_art if matched else [],
        "printed_number": card.printed_number,
        "blur_matched": card.blur_matched,
        "upside_down": card.upside_down,
        "blur": card.blur,
        "glare": card.glare,
        "detection": {"score": card.detection_score, "strategy": card.strategy},
    }


def frame_dict(image: str, result: FrameResult, gallery: Gallery, backend: str, model: str,
               gallery_name: str) -> dict[str, Any]:
    return {
        "image": image,
        "cards": [card_dict(c, gallery) for c in result.cards],
        "no_card": not result.cards,
        "backend": backend,
        "model": model,
        "gallery": gallery_name,
        "timings_ms": result.timings_ms,
    }


def frame_table(report: dict[str, Any]) -> str:
    """Format one image's report as a few readable lines."""
    total = sum(report["timings_ms"].values())
    lines = [f"{report['image']}: {_count(report['cards'])} ({report['backend']}, {total:.0f} ms)"]
    if not report["cards"]:
        lines.append("  no card found")
    for n, card in enumerate(report["cards"], 1):
        lines.append("  " + _card_line(n, card))
    return "\n".join(lines)


def _count(cards: list) -> str:
    return "1 card" if len(cards) == 1 else f"{len(cards)} cards"


def _card_line(n: int, card: dict[str, Any]) -> str:
    x = min(p[0] for p in card["quad"])
    y = min(p[1] for p in card["quad"])
    where = f"at ({x:.0f}, {y:.0f})"
    if card["status"] == MATCH:
        line = (f"#{n} match {card['card_id']:<14} {card['name']} - {card['set_name'] or card['set_id']} "
                f"#{card['number']}  score {card['score']:.3f}  {where}")
        if card["printed_number"]:
            line += f"  printed {card['printed_number']}"
        if card["blur_matched"]:
            line += "  (blurred-reference check)"
        if card["same_art"]:
            line += f"  (same art: {', '.join(card['same_art'])})"
        return line
    guess = card["alternatives"][0] if card["alternatives"] else None
    hint = f"closest {guess['card_id']} {guess['name']} {guess['score']:.3f}" if guess else "no close card"
    if card["printed_number"]:
        hint = f"printed {card['printed_number']}, not in the gallery; {hint}"
    return f"#{n} unknown card ({hint})  {where}"
