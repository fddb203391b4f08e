"""The same file sent twice, and photos that look alike, across the whole vault.

Pure: it reads the per-attachment records the importer keeps (`files`: intake SHA-256 and, for
photos, a 64-bit perceptual hash) and finds, for each submission, the other submissions that
carry a byte-identical file (`duplicates`) or a photo within SIMILAR_BITS of one of its photos
(`similar`: resized, recompressed, lightly cropped). One source sending a file twice and two
sources sending the same file are both worth an investigator's look.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from review.state import SubmissionRecord

SIMILAR_BITS = 6  # of 64: the hash of one photo resized or re-encoded differs in fewer bits
# Pigeonhole: split the 64 bits into SIMILAR_BITS + 1 pieces; two hashes that differ in at most
# SIMILAR_BITS bits agree on at least one piece, so only hashes sharing a piece are compared.
_PIECES = [(64 * n // (SIMILAR_BITS + 1), 64 * (n + 1) // (SIMILAR_BITS + 1))
           for n in range(SIMILAR_BITS + 1)]


@dataclass(frozen=True)
class Matches:
    duplicates: dict[str, list[str]] = field(default_factory=dict)  # id -> other ids, sorted
    similar: dict[str, list[str]] = field(default_factory=dict)

    def of(self, sid: str) -> dict[str, list[str]]:
        return {"duplicates": self.duplicates.get(sid, []), "similar": self.similar.get(sid, [])}


def find_matches(submissions: Iterable[SubmissionRecord]) -> Matches:
    by_sha: dict[str, set[str]] = {}
    hashes: list[tuple[str, int]] = []
    for sub in submissions:
        for record in sub.get("files") or []:
            by_sha.setdefault(str(record.get("sha256")), set()).add(sub["id"])
            phash = record.get("phash")
            if isinstance(phash, str):
                hashes.append((sub["id"], int(phash, 16)))
    duplicates: dict[str, set[str]] = {}
    for ids in by_sha.values():
        for sid in ids:
            duplicates.setdefault(sid, set()).update(ids - {sid})
    similar = _near(hashes)
    for sid, ids in similar.items():
        ids -= duplicates.get(sid, set())  # an identical file is a duplicate, not "similar"
    return Matches(
        {k: sorted(v) for k, v in duplicates.items() if v},
        {k: sorted(v) for k, v in similar.items() if v},
    )


def _near(hashes: list[tuple[str, int]]) -> dict[str, set[str]]:
    buckets: dict[tuple[int, int], list[tuple[str, int]]] = {}
    similar: dict[str, set[str]] = {}
    for sid, value in hashes:
        seen: set[str] = set()
        for n, (start, end) in enumerate(_PIECES):
            key = (n, (value >> start) & ((1 << (end - start)) - 1))
            for other, other_value in buckets.get(key, []):
                if other not in seen and other != sid and (
                    (value ^ other_value).bit_count() <= SIMILAR_BITS
                ):
                    seen.add(other)
                    similar.setdefault(sid, set()).add(other)
                    similar.setdefault(other, set()).add(sid)
            buckets.setdefault(key, []).append((sid, value))
    return similar
