"""The project image's cache key covers exactly its build context."""

from __future__ import annotations

from devstack import build, images


def test_the_hashed_context_is_what_dockerignore_lets_through() -> None:
    """A package left out of PROJECT_CONTEXT would not rebuild the image when it changes
    (the node would run stale code); one left out of .dockerignore would not be in it."""
    lines = (build.REPO_DIR / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == set(images.PROJECT_CONTEXT)
    assert "mwa_staging_gateway" in allowed
