"""Database URLs as users write them, turned into what SQLAlchemy needs: one place decides which
driver a `postgresql://` URL gets (psycopg 3, the one installed) for Optuna and the prediction log."""
from __future__ import annotations

from urllib.parse import urlsplit

POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")


def is_postgres(url: str) -> bool:
    return urlsplit(url).scheme in POSTGRES_SCHEMES


def sqlalchemy_url(url: str) -> str:
    """`postgresql://` and `postgres://` get the psycopg driver (SQLAlchemy would pick psycopg2)."""
    if is_postgres(url):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def without_password(url: str) -> str:
    """For printing: the URL with its password masked."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)
