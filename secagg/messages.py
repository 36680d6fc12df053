"""Protocol messages and their versioned, length-checked byte encoding (struct, never pickle).

Every message starts with a 28-byte header: magic b"SA", version, type tag, 16-byte session id,
the block (key set-up messages) or step (per-step messages) index, and the client id the message
is from (client messages) or for (server messages). Bodies are fixed-width fields and
count-prefixed lists; decoding checks every length and rejects trailing bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TypeVar, overload

import numpy as np

from secagg.errors import MalformedMessage, VersionMismatch

MAGIC = b"SA"
VERSION = 6  # 2: seed and share commitments, unheld peers, pairwise-key reveals; 3: parameter digest;
#             4: consistency MACs beside the consistency signatures; 5: a consistency MAC's input
#             names its signer and receiver; 6: the consistency payload names the signer's block
#             encryption key, UnmaskRequest relays those of non-neighbour signers
_HEADER = struct.Struct(">2sBB16sII")
SESSION_ID_BYTES = 16
KEY_BYTES = 32
SIGNATURE_BYTES = 64
COMMITMENT_BYTES = 32
DIGEST_BYTES = 32
MAC_BYTES = 32  # HMAC-SHA256 of a consistency payload, under a key two neighbours share


class _Wire:
    """Mixin: `to_bytes()` for every message type."""

    __slots__ = ()

    def to_bytes(self) -> bytes:
        return encode(self)  # type: ignore[arg-type]  # only the Message classes below mix it in


@dataclass(frozen=True)
class Header:
    session_id: bytes
    index: int  # block for key set-up messages, step for per-step messages
    client_id: int


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise MalformedMessage(f"message truncated: need {n} bytes at offset {self.pos}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return bytes(out)

    def u8(self) -> int:
        return self.take(1)[0]

    def u32(self) -> int:
        return struct.unpack(">I", self.take(4))[0]

    def blob(self) -> bytes:
        return self.take(self.u32())

    def ids(self) -> tuple[int, ...]:
        count = self.u32()
        return struct.unpack(f">{count}I", self.take(4 * count))

    def done(self) -> None:
        if self.pos != len(self.data):
            raise MalformedMessage(f"{len(self.data) - self.pos} trailing bytes")


def _blob(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _ids(ids: tuple[int, ...]) -> bytes:
    return struct.pack(f">I{len(ids)}I", len(ids), *ids)


def _sig(signature: bytes | None) -> bytes:
    return b"\x00" if signature is None else b"\x01" + signature


def _read_sig(r: _Reader) -> bytes | None:
    flag = r.u8()
    if flag not in (0, 1):
        raise MalformedMessage("bad signature flag")
    return r.take(SIGNATURE_BYTES) if flag else None


@dataclass(frozen=True)
class AdvertiseKeys(_Wire):
    """Round 0, client -> server: the block's encryption key, one masking key per step, and a
    commitment to each step's self-mask seed b (so a rebuilt b can be checked)."""

    TAG = 1
    header: Header
    c_public: bytes
    s_publics: tuple[bytes, ...]
    signature: bytes | None = None
    b_commitments: tuple[bytes, ...] = ()
    # SHA-256 of the session parameters as the sender understood them (`common.params_digest`);
    # signed with the rest, so peers catch a coordinator that told members different things
    params_digest: bytes = bytes(DIGEST_BYTES)

    def body(self) -> bytes:
        if len(self.params_digest) != DIGEST_BYTES:
            raise MalformedMessage(f"params_digest must be {DIGEST_BYTES} bytes")
        return (self.c_public + struct.pack(">I", len(self.s_publics)) + b"".join(self.s_publics)
                + struct.pack(">I", len(self.b_commitments)) + b"".join(self.b_commitments)
                + self.params_digest)

    def signed_bytes(self) -> bytes:
        """What the Ed25519 identity key signs: the header and body, without the signature."""
        return _encode_header(self.TAG, self.header) + self.body()

    def _encode_body(self) -> bytes:
        return self.body() + _sig(self.signature)

    @classmethod
    def _decode_body(cls, header: Header, r: _Reader) -> AdvertiseKeys:
        c_public = r.take(KEY_BYTES)
        s_publics = tuple(r.take(KEY_BYTES) for _ in range(r.u32()))
        b_commitments = tuple(r.take(COMMITMENT_BYTES) for _ in range(r.u32()))
        params_digest = r.take(DIGEST_BYTES)
        return cls(header, c_public, s_publics, _read_sig(r), b_commitments, params_digest)


@dataclass(frozen=True)
class KeyDirectory(_Wire):
    """Round 0, server -> client: the advertisements of the client's neighbours and itself.

    Entries are decoded as AdvertiseKeys only (the tag is checked before the body is read), so
    nesting is one level deep whatever the bytes say.
    """

    TAG = 2
    header: Header
    entries: tuple[AdvertiseKeys, ...]

    def _encode_body(self) -> bytes:
        return struct.pack(">I", len(self.entries)) + b"".join(_blob(e.to_bytes()) for e in self.entries)

    @classmethod
    def _decode_body(cls, header: Header, r: _Reader) -> KeyDirectory:
        entries = tuple(decode(r.blob(), AdvertiseKeys) for _ in range(r.u32()))
        return cls(header, entries)


@dataclass(frozen=True)
class ShareKeys(_Wire):
    """Round 1, client -> server: encrypted share bundles, one per live neighbour (receiver, ct),
    and for every holder, itself included, the commitments to its shares (holder, digests)."""

    TAG = 3
    header: Header
    ciphertexts: tuple[tuple[int, bytes], ...]
    commitments: tuple[tuple[int, bytes], ...] = ()

    def _encode_body(self) -> bytes:
        return _encode_pairs(self.ciphertexts) + _encode_pairs(self.commitments)

    @classmethod
    def _decode_body(cls, header: Header, r: _Reader) -> ShareKeys:
        return cls(header, _decode_pairs(r), _decode_pairs(r))


@dataclass(frozen=True)
class ShareDelivery(_Wire):
    """Round 1, server -> client: the bundles addressed to the client (sender, ct) and each
    sender's commitments to the shares in it (sender, digests)."""

    TAG = 4
    header: Header
    ciphertexts: tuple[tuple[int, bytes], ...]
    commitments: tuple[tuple[int, bytes], ...] = ()

    def _encode_body(self) -> bytes:
        return _encode_pairs(self.ciphertexts) + _encode_pairs(self.commitments)

    @classmethod
    def _decode_body(cls, header: Header, r: _Reader) -> ShareDelivery:
        return cls(header, _decode_pairs(r), _decode_pairs(r))


@dataclass(frozen=True)
class MaskedInput(_Wire):
    """Round 2, client -> server: y_u as little-endian uint32, 4 bytes per element, and the live
    neighbours whose share bundles this client could not use (it holds no shares of them)."""

    TAG = 5
    header: Header
    masked: np.ndarray = field(repr=False)  # (d + 2,) uint32
    unheld: tuple[int, ...] = ()

    def _encode_body(self) -> bytes:
        data = np.ascontiguousarray(self.masked, dtype="<u4")
        return struct.pack(">I", data.shape[0]) + data.tobytes() + _ids(self.unheld)

    @classmethod
    def _decode_body(cls, header: Header, r: _Reader) -> MaskedInput:
        count = r.u32()
        start = r.pos
        r.take(4 * count)
        masked = np.frombuffer(r.data, dtype="<u4", count=count, offset=start)
        return cls(header, masked, r.ids())


@dataclass(frozen=True)
class ConsistencyRequest(_Wire):
    """Round 3 (authenticated), server -> client: the survivors U3 to sign."""

    TAG = 6
    header: Header
    survivors: tuple[int, ...]

    def _encode_body(self) -> bytes:
        return _ids(self.survivors)

    @classmethod
    def _decode_body(cls, header: Header, r: _Reader) -> ConsistencyRequest:
        return cls(header, r.ids())


@dataclass(frozen=True)
class ConsistencySignature(_Wire):
    """Round 3 (authenticated), client -> server: the client's signature over U3 and, for each
    surviving neighbour, an HMAC of the same payload under the key the two of them share (the
    coordinator cannot forge it; the neighbour checks it instead of the signature)."""

    TAG = 7
    header: Header
    signature: bytes
    macs: tuple[tuple[int, bytes], ...] = ()  # (recipient, MAC_BYTES)

    def _encode_body(self) -> bytes:
        return self.signature + _encode_pairs(self.macs)

    @classmethod
    def _decode_body(cls, header: Header, r: _Reader) -> ConsistencySignature:
        signature = r.take(SIGNATURE_BYTES)
        return cls(header, signature, _decode_macs(r))


@dataclass(frozen=True)
class UnmaskRequest(_Wire):
    """Round 4, server -> client: who survived (reveal b-shares), who dropped (s-shares), and
    which of the dropped are too poorly held to rebuild (reveal the pairwise mask key instead)."""

    TAG = 8
    header: Header
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]
    signatures: tuple[tuple[int, bytes], ...] = ()
    pair_keys: tuple[int, ...] = ()  # a subset of `dropped`
    # (signer, MAC) for signers of `signatures` that are the client's neighbours: each the
    # signer's HMAC of the survivor list addressed to this client, checked instead of its signature
    macs: tuple[tuple[int, bytes], ...] = ()
    # (signer, c_public) for signers of `signatures` that are not the client's neighbours: the
    # block encryption key each one's signed payload names (the coordinator's word; a client
    # uses its own copy of a neighbour's)
    signer_keys: tuple[tuple[int, bytes], ...] = ()

    def _encode_body(self) -> bytes:
        return (_ids(self.survivors) + _ids(self.dropped) + _encode_pairs(self.signatures)
                + _ids(self.pair_keys) + _encode_pairs(self.macs) + _encode_pairs(self.signer_keys))

    @classmethod
    def _decode_body(cls, header: Header, r: _Reader) -> UnmaskRequest:
        survivors, dropped = r.ids(), r.ids()
        signatures = _decode_pairs(r)
        if any(len(s) != SIGNATURE_BYTES for _, s in signatures):
            raise MalformedMessage(f"signatures must be {SIGNATURE_BYTES} bytes")
        pair_keys = r.ids()
        macs = _decode_macs(r)
        signer_keys = _decode_pairs(r)
        if any(len(k) != KEY_BYTES for _, k in signer_keys):
            raise MalformedMessage(f"signer keys must be {KEY_BYTES} bytes")
        return cls(header, survivors, dropped, signatures, pair_keys, macs, signer_keys)


KIND_MASK_KEY = 0  # share of the per-step masking secret key s_sk (peer dropped)
KIND_SELF_MASK = 1  # share of the per-step self-mask seed b (peer survived)
KIND_PAIR_KEY = 2  # the pairwise mask key shared with a dropped peer whose s_sk cannot be rebuilt


@dataclass(frozen=True)
class UnmaskResponse(_Wire):
    """Round 4, client -> server: (peer, kind, 36-byte share) for each requested secret."""

    TAG = 9
    header: Header
    shares: tuple[tuple[int, int, bytes], ...] = field(repr=False)

    def _encode_body(self) -> bytes:
        parts = [struct.pack(">I", len(self.shares))]
        for peer, kind, share in self.shares:
            parts.append(struct.pack(">IB", peer, kind) + _blob(share))
        return b"".join(parts)

    @classmethod
    def _decode_body(cls, header: Header, r: _Reader) -> UnmaskResponse:
        shares = []
        for _ in range(r.u32()):
            peer, kind = r.u32(), r.u8()
            if kind not in (KIND_MASK_KEY, KIND_SELF_MASK, KIND_PAIR_KEY):
                raise MalformedMessage(f"unknown share kind {kind}")
            shares.append((peer, kind, r.blob()))
        return cls(header, tuple(shares))


Message = (
    AdvertiseKeys
    | KeyDirectory
    | ShareKeys
    | ShareDelivery
    | MaskedInput
    | ConsistencyRequest
    | ConsistencySignature
    | UnmaskRequest
    | UnmaskResponse
)
_TYPES = {
    cls.TAG: cls
    for cls in (
        AdvertiseKeys,
        KeyDirectory,
        ShareKeys,
        ShareDelivery,
        MaskedInput,
        ConsistencyRequest,
        ConsistencySignature,
        UnmaskRequest,
        UnmaskResponse,
    )
}


def _encode_header(tag: int, header: Header) -> bytes:
    if len(header.session_id) != SESSION_ID_BYTES:
        raise MalformedMessage(f"session id must be {SESSION_ID_BYTES} bytes")
    return _HEADER.pack(MAGIC, VERSION, tag, header.session_id, header.index, header.client_id)


def _encode_pairs(pairs: tuple[tuple[int, bytes], ...]) -> bytes:
    return struct.pack(">I", len(pairs)) + b"".join(struct.pack(">I", i) + _blob(data) for i, data in pairs)


def _decode_pairs(r: _Reader) -> tuple[tuple[int, bytes], ...]:
    return tuple((r.u32(), r.blob()) for _ in range(r.u32()))


def _decode_macs(r: _Reader) -> tuple[tuple[int, bytes], ...]:
    macs = _decode_pairs(r)
    if any(len(m) != MAC_BYTES for _, m in macs):
        raise MalformedMessage(f"consistency MACs must be {MAC_BYTES} bytes")
    return macs


AnyMessage = TypeVar("AnyMessage", bound=Message)


def encode(message: Message) -> bytes:
    """Message -> bytes."""
    return _encode_header(message.TAG, message.header) + message._encode_body()


@overload
def decode(data: bytes, expected: None = None) -> Message: ...


@overload
def decode(data: bytes, expected: type[AnyMessage]) -> AnyMessage: ...


def decode(data: bytes, expected: type[AnyMessage] | None = None) -> Message:
    """Bytes -> message; raises MalformedMessage / VersionMismatch on anything malformed."""
    if len(data) < _HEADER.size:
        raise MalformedMessage(f"message shorter than the {_HEADER.size}-byte header")
    magic, version, tag, session_id, index, client_id = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise MalformedMessage("bad magic: not a secagg message")
    if version != VERSION:
        raise VersionMismatch(f"wire version {version}, this code speaks {VERSION}")
    if tag not in _TYPES:
        raise MalformedMessage(f"unknown message type {tag}")
    if expected is not None and _TYPES[tag] is not expected:
        # refused before the body is read: no work (and no nesting) for a message of another type
        raise MalformedMessage(f"expected {expected.__name__}, got {_TYPES[tag].__name__}")
    r = _Reader(data)
    r.pos = _HEADER.size
    message = _TYPES[tag]._decode_body(Header(session_id, index, client_id), r)
    r.done()
    return message
