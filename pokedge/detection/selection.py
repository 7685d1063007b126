"""From scored candidate quads to one entry per card, in reading order.

Candidates of one card overlap or nest (the card in its sleeve, the card's
inner border in the card). Non-maximum suppression keeps the best of each
group and turns the distinct runner-ups into alternatives, which the
recognizer also tries. A quad that encloses two or more other cards (a
binder page, whose outline has the card aspect too) is dropped.
"""

from __future__ import annotations

import numpy as np

from pokedge.detection import geometry
from pokedge.detection.candidate import Candidate

DUPLICATE_SHARE = 0.025  # corners closer than this share of the frame diagonal make two quads duplicates
SAME_CARD_IOU = 0.5
CONFLICT_IOU = 0.2  # weaker quads overlapping a kept card this much, but not nested in it, are dropped
NESTED_AREA_RATIO = 0.4  # a quad inside another and at least this share of its area shows the same card
NESTED_ALTERNATIVE_RATIO = 0.25  # an enclosed quad this large is kept as an alternative (an art box, a slab's card)
# An enclosed quad under this share of the outer quad's area is a card of its own, not one of the outer card's
# boxes. The art box is about 0.38 of a card and 0.27 of a toploader around it (estimates from their sizes).
SEPARATE_CARD_RATIO = 0.12
TAKEOVER_SHARE = 0.6  # an enclosing quad scoring this share of the enclosed one is taken as the card
PREFER_OUTER_RATIO = 0.65  # within one card, an enclosed quad smaller than this share of the outer loses to it
DISTINCT_IOU = 0.9  # alternatives overlapping the main quad or each other more than this add nothing
GROUP_MEMBER_SCORE = 0.5  # cards inside a group quad count when they score this share of the group's score
GROUP_MEMBER_MAX_SHARE = 0.6  # a member of a group covers at most this share of it
GROUP_SIZE_SPREAD = 2.0  # members of a group differ in area by at most this factor
GROUP_SMALL_SHARE = 0.3  # cards of a 2 x 2 or larger page each cover at most this share of its outline
GROUP_PAIR_COVER = 0.8  # two cards side by side cover at least this share of the pair's outline
GROUP_PAIR_MEMBER_SCORE = 0.75  # each card of a pair scores at least this share of the pair's score
MULTI_CARD_CONTEXT = 3  # separate similar cards in a frame that make it a page of cards
# A quad with this share of its area inside a larger quad of one card is nested in it even when a corner
# sticks out. Quads built from edge lines overshoot a corner by the error of one side: the upper part of a
# glared card ran 11 px past the card's outline at one corner with 96% of its area inside it.
INSIDE_AREA_SHARE = 0.9


def remove_duplicates(candidates: list[Candidate], diagonal: float) -> list[Candidate]:
    """Keep the first of every set of candidates whose corners all lie within a few pixels of each other."""
    if not candidates:
        return []
    corners = np.stack([c.quad for c in candidates])
    # Every cyclic corner order of each quad, so the same quad listed from another corner still matches.
    shifted = np.stack([np.roll(corners, k, axis=1) for k in range(4)], axis=1)
    limit = DUPLICATE_SHARE * diagonal

    kept_index: list[int] = []
    for i in range(len(candidates)):
        if kept_index:
            distance = np.linalg.norm(shifted[kept_index] - corners[i][None, None], axis=3).max(axis=2).min(axis=1)
            if distance.min() < limit:
                continue
        kept_index.append(i)
    return [candidates[i] for i in kept_index]


def suppress(candidates: list[Candidate], alternative_floor: float, max_alternatives: int) -> list[Candidate]:
    """Merge overlapping or nested candidates into one entry per card, alternatives attached.

    `candidates` must be sorted by score, best first. A loser becomes an
    alternative only when it scores at least `alternative_floor` and is not
    a near copy of a quad the entry already has. Within one card, a clearly
    larger quad (the card around its art box or its upper half) becomes the
    main quad when it scores at least `TAKEOVER_SHARE` of the current one.
    """
    kept: list[Candidate] = []
    for candidate in candidates:
        relation, winner = _relation_to_kept(candidate, kept)
        if relation == "new":
            kept.append(candidate)
        elif relation == "same" and candidate.score >= alternative_floor:
            if _takes_over(candidate, winner, PREFER_OUTER_RATIO):
                _swap_main(kept, winner, candidate, max_alternatives)
            else:
                _add_alternative(winner, candidate, max_alternatives)
    return _resolve_enclosures(kept, max_alternatives)


def _relation_to_kept(candidate: Candidate, kept: list[Candidate]) -> tuple[str, Candidate | None]:
    """Return how `candidate` relates to the kept cards: "new", "same" (card), "inside" or "conflict"."""
    for winner in kept:
        if not _boxes_overlap(winner.quad, candidate.quad):
            continue
        iou = geometry.quad_iou(winner.quad, candidate.quad)
        if iou >= SAME_CARD_IOU or _nested(winner.quad, candidate.quad, NESTED_AREA_RATIO):
            return "same", winner
        if _inside(winner.quad, candidate.quad) or _inside(candidate.quad, winner.quad):
            continue  # settled by _resolve_enclosures once all cards are known
        if iou >= CONFLICT_IOU:
            return "conflict", winner
    return "new", None


def _takes_over(outer: Candidate, inner: Candidate, max_ratio: float) -> bool:
    """True when `outer` encloses `inner`, is clearly larger and scores well enough to be the card."""
    if outer.score < TAKEOVER_SHARE * inner.score:
        return False
    if geometry.quad_area(inner.quad) > max_ratio * geometry.quad_area(outer.quad):
        return False
    return _inside(outer.quad, inner.quad)


def _swap_main(kept: list[Candidate], old: Candidate, new: Candidate, max_alternatives: int) -> None:
    new.alternatives = []
    for item in [old, *old.alternatives]:
        item.alternatives = []
        _add_alternative(new, item, max_alternatives)
    kept[next(i for i, k in enumerate(kept) if k is old)] = new


def _resolve_enclosures(kept: list[Candidate], max_alternatives: int) -> list[Candidate]:
    """Settle cards that enclose other cards: cards neither contain nor sit inside other cards.

    The outer quad wins when it reaches `_takeover_score` of the cards it
    encloses (a card around its art box and text box); the enclosed cards
    are dropped, the largest kept as an alternative when it is big enough
    to be the card itself. Otherwise the outer quad is dropped (a sheet of
    paper, a desk plank or a screen around a card). Page outlines around
    several cards were removed before, by `drop_groups`.
    """
    dropped: set[int] = set()
    for i in sorted(range(len(kept)), key=lambda k: geometry.quad_area(kept[k].quad), reverse=True):
        if i in dropped:
            continue
        outer = kept[i]
        enclosed = [j for j in range(len(kept)) if j != i and j not in dropped and _inside(outer.quad, kept[j].quad)]
        if not enclosed:
            continue
        if outer.score < _takeover_score(outer, [kept[j] for j in enclosed]):
            dropped.add(i)
            continue
        largest = max(enclosed, key=lambda j: geometry.quad_area(kept[j].quad))
        if geometry.quad_area(kept[largest].quad) >= NESTED_ALTERNATIVE_RATIO * geometry.quad_area(outer.quad):
            _add_alternative(outer, kept[largest], max_alternatives)
        dropped.update(enclosed)
    return [c for i, c in enumerate(kept) if i not in dropped]


def _takeover_score(outer: Candidate, enclosed: list[Candidate]) -> float:
    """Return the score `outer` needs to replace the cards it encloses.

    The card around its own boxes needs `TAKEOVER_SHARE` of their score. An
    enclosed card smaller than `SEPARATE_CARD_RATIO` of the outer quad lies
    on a larger rectangle, such as a sheet or the frame-wide outline of desk
    planks, and that rectangle must outscore it.
    """
    outer_area = geometry.quad_area(outer.quad)
    needed = 0.0
    for card in enclosed:
        small = geometry.quad_area(card.quad) < SEPARATE_CARD_RATIO * outer_area
        needed = max(needed, (1.0 if small else TAKEOVER_SHARE) * card.score)
    return needed


def _add_alternative(winner: Candidate, candidate: Candidate, max_alternatives: int) -> None:
    if len(winner.alternatives) >= max_alternatives:
        return
    if all(geometry.quad_iou(other.quad, candidate.quad) < DISTINCT_IOU for other in [winner, *winner.alternatives]):
        winner.alternatives.append(candidate)


def _nested(a: np.ndarray, b: np.ndarray, min_ratio: float) -> bool:
    """True when the smaller quad lies inside the larger and covers at least `min_ratio` of its area.

    Lying inside means corners within a small margin of the larger quad, or
    `INSIDE_AREA_SHARE` of the area within it, so that such a quad stays as
    an alternative of its card instead of being dropped as a conflict. Only
    the corner test decides whether a larger quad takes over (`_takes_over`),
    because the outline of a card and the papers under it also contains
    most of the card's area.
    """
    small, large = (a, b) if geometry.quad_area(a) < geometry.quad_area(b) else (b, a)
    if geometry.quad_area(small) < min_ratio * geometry.quad_area(large):
        return False
    if geometry.contains(large, small, margin=0.03 * np.sqrt(geometry.quad_area(large))):
        return True
    return geometry.share_inside(large, small) >= INSIDE_AREA_SHARE


def _inside(outer: np.ndarray, inner: np.ndarray) -> bool:
    """True when `inner` lies within `outer`: a card does not sit inside another card."""
    return geometry.contains(outer, inner, margin=0.02 * np.sqrt(geometry.quad_area(outer)))


def _boxes_overlap(a: np.ndarray, b: np.ndarray) -> bool:
    a_min, a_max = a.min(axis=0), a.max(axis=0)
    b_min, b_max = b.min(axis=0), b.max(axis=0)
    return bool(np.all(a_min <= b_max) and np.all(b_min <= a_max))


def drop_groups(candidates: list[Candidate]) -> list[Candidate]:
    """Drop quads that enclose several separate card-sized quads: the outline of a binder page or part of it.

    A 2 x 2 or 3 x 3 page, and a pair of cards side by side, have the card
    aspect themselves. Three or more similar quads of at most
    `GROUP_SMALL_SHARE` of the outer quad make it a page; a card's own
    boxes are larger than that. A pair looks like a card split into its art
    and text halves, so two members make a group only when they fill the
    outer quad and the frame shows at least `MULTI_CARD_CONTEXT` separate
    cards of one size.
    """
    multi_card = _separate_similar(candidates) >= MULTI_CARD_CONTEXT
    return [c for c in candidates if not _is_group(c, candidates, multi_card)]


def _is_group(outer: Candidate, candidates: list[Candidate], multi_card: bool) -> bool:
    outer_area = geometry.quad_area(outer.quad)
    inside = [c for c in candidates
              if c is not outer and c.score >= GROUP_MEMBER_SCORE * outer.score
              and geometry.quad_area(c.quad) <= GROUP_MEMBER_MAX_SHARE * outer_area
              and _inside(outer.quad, c.quad)]
    members: list[np.ndarray] = []
    for candidate in inside:
        if all(geometry.quad_iou(candidate.quad, m) < CONFLICT_IOU for m in members):
            members.append(candidate.quad)
    if len(members) < 2:
        return False

    shares = np.array([geometry.quad_area(m) for m in members]) / outer_area
    small = shares[shares <= GROUP_SMALL_SHARE]
    if len(small) >= 3 and np.sum(small >= small.max() / GROUP_SIZE_SPREAD) >= 3:
        return True
    large = [m for m, share in zip(members, shares) if share > GROUP_SMALL_SHARE]
    if not multi_card or len(large) != 2 or shares[shares > GROUP_SMALL_SHARE].sum() < GROUP_PAIR_COVER:
        return False
    # Halves of a card score well below the card, but two cards score about as well as their pair.
    scores = [c.score for c in inside if any(c.quad is m for m in large)]
    return min(scores) >= GROUP_PAIR_MEMBER_SCORE * outer.score


def _separate_similar(candidates: list[Candidate]) -> int:
    """Number of non-overlapping, well-scored candidates whose areas are within `GROUP_SIZE_SPREAD` of their median."""
    if not candidates:
        return 0
    best = candidates[0].score
    separate: list[np.ndarray] = []
    for candidate in candidates:
        if candidate.score < GROUP_MEMBER_SCORE * best:
            continue
        if all(not _boxes_overlap(candidate.quad, q) or geometry.quad_iou(candidate.quad, q) < CONFLICT_IOU
               and not _inside(candidate.quad, q) and not _inside(q, candidate.quad) for q in separate):
            separate.append(candidate.quad)
    areas = np.array([geometry.quad_area(q) for q in separate])
    median = float(np.median(areas))
    return int(np.sum((areas <= GROUP_SIZE_SPREAD * median) & (areas >= median / GROUP_SIZE_SPREAD)))


def reading_order(candidates: list[Candidate]) -> list[Candidate]:
    """Sort cards into rows, top to bottom, then left to right within a row.

    Two cards share a row when their centres differ in height by less than
    half the median card height.
    """
    if len(candidates) < 2:
        return candidates
    centres = np.array([c.quad.mean(axis=0) for c in candidates])
    heights = np.array([np.ptp(c.quad[:, 1]) for c in candidates])
    row_gap = 0.5 * float(np.median(heights))

    rows: list[list[int]] = []
    for i in np.argsort(centres[:, 1]):
        if rows and centres[i, 1] - np.mean(centres[rows[-1], 1]) < row_gap:
            rows[-1].append(int(i))
        else:
            rows.append([int(i)])
    return [candidates[i] for row in rows for i in sorted(row, key=lambda j: centres[j, 0])]
