"""The local Docker daemon and the project's images in it: one-line errors for what is missing."""

from __future__ import annotations

from typing import Any

from cnnops.core.errors import CnnopsError


def open_docker() -> Any:
    """A client of the local Docker daemon, or one line saying there is none."""
    import docker

    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except (docker.errors.DockerException, OSError) as err:
        raise CnnopsError(
            f"no Docker daemon answers ({type(err).__name__}): start one (`make docker-start`, or "
            "`sudo systemctl start docker`)"
        ) from None
    return client


def find_image(client: Any, image: str, what: str = "project image", target: str = "image") -> Any:
    """An image from the local store (the project image unless `what` says otherwise); DockerRunner
    would try to pull it, and there may be no registry to pull from."""
    import docker

    try:
        return client.images.get(image)
    except docker.errors.ImageNotFound:
        raise CnnopsError(
            f"the {what} {image} is not in the local Docker store: build it with `make {target}`"
        ) from None


def image_user(image: Any) -> tuple[int, int]:
    """The uid and gid the image runs as; an image that would run as root is refused."""
    user = str(image.attrs.get("Config", {}).get("User") or "")
    uid, _, gid = user.partition(":")
    if not uid.isdigit() or int(uid) == 0:
        raise CnnopsError(
            f"the project image runs as user {user or 'root'!r}; tasks must run as a fixed non-root "
            "uid: rebuild it with `make image`"
        )
    return int(uid), int(gid or uid)
