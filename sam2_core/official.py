"""The eight official SAM 2 and SAM 2.1 models: name, config file, download URL and SHA-256 of
each, written once. :mod:`sam2_core.hub` fetches, caches and checks them.

Where the table's values come from
----------------------------------
* URLs: Meta's own download script, facebookresearch/sam2
  ``checkpoints/download_ckpts.sh`` (SAM 2.1 under ``092824/``; the SAM 2
  lines, commented out there, under ``072824/``).
* SHA-256: computational-cell-analytics/micro-sam, ``micro_sam/v2/util.py``
  (its ``HASHES`` table, passed as pooch's ``known_hash`` when it downloads
  these same eight URLs; commit 4f6cca85a2e9ca9e25ec4df0eab4e239f9a48fcc).
  Each value also appears, pinned to the same URL, in other independent
  public projects' download scripts and SBOMs, and the SAM 2.1 base_plus one
  in a note quoting the Hugging Face LFS record of
  facebook/sam2.1-hiera-base-plus. One lone public script pins a different
  value for sam2_hiera_base_plus (2257ced7...); the later version of that
  same script and every other source use d0bb7f23..., kept here.
* Sizes (bytes): from public pinned download manifests that record size and
  SHA-256 together; informational only (the SHA-256 is what is checked).
  None where no source was found (sam2_hiera_base_plus).
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2"


@dataclass(frozen=True)
class OfficialCheckpoint:
    """One official model: its config and its checkpoint file.

    Attributes:
        name: model name, as used by ``sam2_core.build_model`` (e.g. ``sam2.1_hiera_tiny``).
        version: ``sam2`` or ``sam2.1``.
        variant: ``tiny``, ``small``, ``base_plus`` or ``large``.
        path: file path below the release base URL (``092824/sam2.1_hiera_tiny.pt``).
        sha256: lowercase hex SHA-256 of the file, or None when no trustworthy value is known.
        size: file size in bytes, or None when unknown.
        config_file: the official config of this model, relative to the ``sam2`` package.
    """

    name: str
    version: str
    variant: str
    path: str
    sha256: str | None
    size: int | None
    config_file: str

    @property
    def filename(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    def url(self, base_url: str | None = None) -> str:
        """Download URL below ``base_url`` (default: Meta's), keeping the official layout."""
        return (base_url or DEFAULT_BASE_URL).rstrip("/") + "/" + self.path


def _entry(
    version: str, release: str, variant: str, short: str, sha256: str, size: int | None
) -> OfficialCheckpoint:
    name = f"{version}_hiera_{variant}"
    return OfficialCheckpoint(
        name=name,
        version=version,
        variant=variant,
        path=f"{release}/{name}.pt",
        sha256=sha256,
        size=size,
        config_file=f"configs/{version}/{version}_hiera_{short}.yaml",
    )


# fmt: off
OFFICIAL_CHECKPOINTS: dict[str, OfficialCheckpoint] = {
    c.name: c
    for c in (
        # SAM 2 (July 2024 release)
        _entry("sam2", "072824", "tiny", "t", "65b50056e05bcb13694174f51bb6da89c894b57b75ccdf0ba6352c597c5d1125", 155_906_050),
        _entry("sam2", "072824", "small", "s", "95949964d4e548409021d47b22712d5f1abf2564cc0c3c765ba599a24ac7dce3", 184_309_650),
        _entry("sam2", "072824", "base_plus", "b+", "d0bb7f236400a49669ffdd1be617959a8b1d1065081789d7bbff88eded3a8071", None),
        _entry("sam2", "072824", "large", "l", "7442e4e9b732a508f80e141e7c2913437a3610ee0c77381a66658c3a445df87b", 897_952_466),
        # SAM 2.1 (September 2024 release)
        _entry("sam2.1", "092824", "tiny", "t", "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69", 156_008_466),
        _entry("sam2.1", "092824", "small", "s", "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38", 184_416_285),
        _entry("sam2.1", "092824", "base_plus", "b+", "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5", 323_606_802),
        _entry("sam2.1", "092824", "large", "l", "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318", 898_083_611),
    )
}
# fmt: on


def official_checkpoint(name: str) -> OfficialCheckpoint:
    """The table entry for ``name``; KeyError listing the valid names otherwise."""
    try:
        return OFFICIAL_CHECKPOINTS[name]
    except KeyError:
        raise KeyError(
            f"unknown model {name!r}; official names: {', '.join(sorted(OFFICIAL_CHECKPOINTS))}"
        ) from None


# ---------------------------------------------------------------------------
# SAM 1 (Segment Anything): bare state dicts (``torch.save(model.state_dict())``).
# URLs: facebookresearch/segment-anything README, "Model Checkpoints". SHA-256:
# computational-cell-analytics/micro-sam's registry of the default segment-anything models,
# pinned to the same URLs by many other independent public download scripts. Sizes: public
# manifests recording size and SHA-256 together; None where no trustworthy source was found.
# ---------------------------------------------------------------------------

SAM1_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything"


@dataclass(frozen=True)
class SAM1Checkpoint:
    """One official SAM 1 checkpoint file; ``name`` is the model name (``sam_vit_b``)."""

    name: str
    filename: str
    sha256: str
    size: int | None

    def url(self, base_url: str | None = None) -> str:
        """Download URL below ``base_url`` (default: Meta's)."""
        return (base_url or SAM1_BASE_URL).rstrip("/") + "/" + self.filename


SAM1_CHECKPOINTS: dict[str, SAM1Checkpoint] = {
    c.name: c
    for c in (
        SAM1Checkpoint(
            "sam_vit_b",
            "sam_vit_b_01ec64.pth",
            "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
            375_042_383,
        ),
        SAM1Checkpoint(
            "sam_vit_l",
            "sam_vit_l_0b3195.pth",
            "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
            None,
        ),
        SAM1Checkpoint(
            "sam_vit_h",
            "sam_vit_h_4b8939.pth",
            "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
            2_564_550_879,
        ),
    )
}


def checkpoint_files() -> dict:
    """Every official checkpoint file by model name (SAM 2, SAM 2.1, SAM 1): what `jobs
    fetch-checkpoint` fetches and what a run given a name as its checkpoint plans with."""
    return {**OFFICIAL_CHECKPOINTS, **SAM1_CHECKPOINTS}
