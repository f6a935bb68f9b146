"""Registry credentials: an owner's encrypted provider credential, else REGISTRY_USERNAME/PASSWORD."""

from __future__ import annotations

import json

from cryptography.fernet import Fernet, InvalidToken

from core.errors import RegistryError
from core.settings import Settings
from models import ProviderCredential

# ProviderCredential.provider of a registry login; user_id is the GitHub owner (user or org) login.
REGISTRY_PROVIDER = "docker-registry"


def _fernet(settings: Settings) -> Fernet:
    if not settings.encryption_key:
        raise RegistryError("ENCRYPTION_KEY is not set, so registry credentials cannot be encrypted or read")
    try:
        return Fernet(settings.encryption_key.encode())
    except ValueError:
        raise RegistryError("ENCRYPTION_KEY is not a Fernet key (32 url-safe base64-encoded bytes)") from None


def save_registry_credential(settings: Settings, *, owner: str, username: str, password: str) -> ProviderCredential:
    """Keep an owner's registry login, encrypted with ENCRYPTION_KEY; replaces an older one."""
    token = _fernet(settings).encrypt(json.dumps({"username": username, "password": password}).encode())
    query = (ProviderCredential.provider == REGISTRY_PROVIDER) & (ProviderCredential.user_id == owner.lower())
    ProviderCredential.delete().where(query).execute()
    return ProviderCredential.create(user_id=owner.lower(), provider=REGISTRY_PROVIDER, encrypted_data=token.decode())


def registry_auth(settings: Settings, *, owner: str) -> dict[str, str] | None:
    """The auth_config for a push to or pull from REGISTRY_URL; None when no login is known."""
    login = _stored_login(settings, owner) or _environment_login(settings)
    if login is None:
        return None
    username, password = login
    return {"username": username, "password": password, "serveraddress": settings.registry_url or ""}


def _environment_login(settings: Settings) -> tuple[str, str] | None:
    if settings.registry_username is None:
        return None
    return settings.registry_username, settings.registry_password or ""


def _stored_login(settings: Settings, owner: str) -> tuple[str, str] | None:
    if not settings.encryption_key:
        return None
    row = ProviderCredential.get_or_none(
        (ProviderCredential.provider == REGISTRY_PROVIDER) & (ProviderCredential.user_id == owner.lower())
    )
    if row is None:
        return None
    try:
        data = json.loads(_fernet(settings).decrypt(str(row.encrypted_data).encode()))
    except InvalidToken:
        raise RegistryError(f"the registry credential of {owner} cannot be decrypted with ENCRYPTION_KEY") from None
    return str(data["username"]), str(data["password"])
