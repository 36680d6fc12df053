"""Ed25519 identity files for authenticated secure aggregation: a node's key and the roster.

A node's identity key is a PEM (PKCS#8, unencrypted) Ed25519 private key, `<node>.identity.key`,
mode 0600. The roster, `identities.toml`, pins every node's raw 32-byte Ed25519 public key as 64
hex digits:

    [identities]
    node-0 = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c"

The organisations exchange the roster out of band; a node given one (`codream node
--identity-key FILE --peer-identities FILE`) takes part only in authenticated sessions whose keys
are the roster's, and the coordinator (`--identities FILE`) relays the same keys to every node.
Errors are ValueError with one line naming the file; the CLI prefixes the flag.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from codream.atomic_files import atomic_write
from codream.toml_compat import tomllib

_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def raw_public_key(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_roster(path: str | os.PathLike[str]) -> dict[str, bytes]:
    """node id -> raw 32-byte Ed25519 public key; ValueError (one line, naming the file)."""
    where = str(path)
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"no such file {where}") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"{where}: cannot read it as TOML ({detail})") from None
    table = data.get("identities")
    if not isinstance(table, dict) or not table:
        raise ValueError(f"{where}: needs an [identities] table of node id = \"hex public key\"")
    roster: dict[str, bytes] = {}
    for node_id, value in table.items():
        if not isinstance(value, str) or not _HEX_KEY.fullmatch(value.strip()):
            raise ValueError(f"{where}: the key of {node_id!r} must be 64 hex digits (a raw 32-byte "
                             "Ed25519 public key)")
        roster[node_id] = bytes.fromhex(value.strip())
    return roster


def load_identity_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """The PEM Ed25519 private key in `path`; ValueError (one line, naming the file)."""
    where = str(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ValueError(f"no such file {where}") from None
    except OSError as error:
        raise ValueError(f"{where}: cannot read it ({error.strerror or error})") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise ValueError(f"{where}: not an unencrypted PEM private key") from None
    except Exception as error:  # cryptography's UnsupportedAlgorithm
        raise ValueError(f"{where}: cannot load the key ({error})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{where}: not an Ed25519 key (a {type(key).__name__.lstrip('_')})")
    return key


def check_own_key(node_id: str, key: Ed25519PrivateKey, roster: Mapping[str, bytes]) -> None:
    """ValueError unless the roster pins `node_id` to `key`'s public key."""
    if node_id not in roster:
        raise ValueError(f"the roster has no key for this node ({node_id!r})")
    if roster[node_id] != raw_public_key(key):
        raise ValueError(f"the roster's key for {node_id!r} is not the public key of this node's "
                         "identity key")


def write_identity_key(path: Path, key: Ed25519PrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    atomic_write(path, lambda stream: stream.write(pem), private=True)  # mode 0600


def roster_toml(roster: Mapping[str, bytes]) -> str:
    lines = ["# node id = raw Ed25519 identity public key (hex); pinned by every node", "[identities]"]
    for node_id, raw in roster.items():
        name = node_id if _BARE_KEY.fullmatch(node_id) else '"' + node_id.replace("\\", "\\\\").replace(
            '"', '\\"') + '"'
        lines.append(f'{name} = "{raw.hex()}"')
    return "\n".join(lines) + "\n"


def write_roster(path: Path, roster: Mapping[str, bytes]) -> None:
    text = roster_toml(roster).encode()
    atomic_write(path, lambda stream: stream.write(text))
