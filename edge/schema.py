"""The fleet's wire format: one versioned JSON schema for everything a unit publishes.

Topics are `nightear/<site>/<node>/event`, `.../heartbeat`, `.../status` and `.../clip`. Every payload is
a JSON object with `schema` (this module's SCHEMA_VERSION) and `kind`; a reader decodes the
envelope first, so a payload from a newer nightear is refused by its version, not misread.
Times are UTC ISO-8601 with milliseconds; `sent` is the unit's own clock when it published,
which lets the fleet see a unit whose clock is off.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from nightear.errors import NightearError

SCHEMA_VERSION = 1
MAX_PAYLOAD_BYTES = 256 * 1024  # a longer event track is thinned to fit (see MAX_TRACK_POINTS)
CLIP_PART_BYTES = 160 * 1024  # FLAC bytes per clip message: base64 and the envelope stay under the limit
MAX_TRACK_POINTS = 1200  # 10 minutes of windows at the default 0.5 s
TOPIC_ROOT = "nightear"
Slug = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]  # MQTT-topic safe


class PayloadError(NightearError):
    """A message on a fleet topic that this nightear cannot take (it is ignored and logged)."""


class UnitPosition(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where a unit stands: WGS 84 degrees and metres above sea level."""

    lat_deg: Annotated[float, msgspec.Meta(ge=-90.0, le=90.0)]
    lon_deg: Annotated[float, msgspec.Meta(ge=-180.0, le=180.0)]
    alt_m: Annotated[float, msgspec.Meta(ge=-500.0, le=9000.0)] = 0.0


class TrackPoint(msgspec.Struct, frozen=True):
    """One scored window's bearing: `t` the window's start (UTC), compass degrees."""

    t: str
    bearing_deg: float
    elevation_deg: float | None
    coherence: float
    confidence: float


class Envelope(msgspec.Struct):
    """What every payload starts with; read first to refuse an unknown version."""

    schema: int
    kind: str


class EventMessage(msgspec.Struct, frozen=True, tag_field="kind", tag="event"):
    """A drone event when it opens (the live alert) and again when it closes."""

    schema: int
    id: str
    node: Slug
    site: Slug
    state: Literal["open", "closed"]
    start: str
    end: str
    sent: str
    peak_confidence: float
    mean_confidence: float
    windows: int
    model: str
    model_sha256: str
    bearing_deg: float | None = None
    bearing_spread_deg: float | None = None
    elevation_deg: float | None = None
    bearing_mirror_deg: float | None = None
    position: UnitPosition | None = None
    heading_deg: float | None = None
    track: list[TrackPoint] = []
    interrupted: bool = False  # closed when the unit started again: the run that heard it died


class HeartbeatMessage(msgspec.Struct, frozen=True, tag_field="kind", tag="heartbeat"):
    """A unit's health every `interval_s`: what an operator needs to see why it went deaf."""

    schema: int
    node: Slug
    site: Slug
    sent: str
    interval_s: float
    uptime_s: float
    nightear_version: str
    model: str
    model_sha256: str
    audio_seconds: float
    input_overflows: int
    dropped_frames: int
    events: int
    pending_events: int  # stored, not yet acknowledged by the broker
    load_1m: float | None = None
    soc_temp_c: float | None = None
    disk_free_bytes: int | None = None
    clips_bytes: int | None = None
    clips_quota_bytes: int | None = None
    low_freq_dbfs: float | None = None  # 20-150 Hz level of the last minute: wind shows here
    position: UnitPosition | None = None
    heading_deg: float | None = None


class StatusMessage(msgspec.Struct, frozen=True, tag_field="kind", tag="status"):
    """Retained `online` when a unit connects; the broker publishes its will, `offline`, when
    the unit vanishes without saying goodbye (and the unit says it itself on a clean stop)."""

    schema: int
    node: Slug
    site: Slug
    state: Literal["online", "offline"]
    sent: str


class ClipMessage(msgspec.Struct, frozen=True, tag_field="kind", tag="clip"):
    """Part of a closed event's clip: FLAC bytes `part` of `parts` (a clip longer than one
    payload travels in several). Sent after the event's closing, never before an alert."""

    schema: int
    node: Slug
    site: Slug
    sent: str
    id: str  # the event's id
    part: Annotated[int, msgspec.Meta(ge=0)]
    parts: Annotated[int, msgspec.Meta(ge=1, le=64)]
    sample_rate: int
    seconds: float
    flac: bytes  # base64 in the JSON

    def __post_init__(self) -> None:
        if self.part >= self.parts:
            raise ValueError(f"clip part {self.part} of {self.parts}")


Message = EventMessage | HeartbeatMessage | StatusMessage | ClipMessage
_decoder = msgspec.json.Decoder(Message)
_envelope = msgspec.json.Decoder(Envelope)
_encoder = msgspec.json.Encoder()


def topic(site: str, node: str, kind: str) -> str:
    return f"{TOPIC_ROOT}/{site}/{node}/{kind}"


def encode(message: Message) -> bytes:
    return _encoder.encode(message)


def decode(topic_name: str, payload: bytes) -> Message:
    """A payload from `topic_name`, checked against the schema; PayloadError says why not."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise PayloadError(f"{len(payload)} bytes, over the {MAX_PAYLOAD_BYTES}-byte limit")
    try:
        head = _envelope.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise PayloadError(f"not a nightear payload ({exc})") from None
    if head.schema != SCHEMA_VERSION:
        raise PayloadError(f"schema version {head.schema}, this nightear reads {SCHEMA_VERSION}")
    try:
        message = _decoder.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise PayloadError(str(exc)) from None
    named = topic(message.site, message.node, kind_of(message))
    if topic_name != named:
        raise PayloadError(f"payload belongs on {named}, not on this topic")
    return message


def kind_of(message: Message) -> str:
    """`event`, `heartbeat`, `status` or `clip`: the message's tag, also its topic's last part."""
    return str(type(message).__struct_config__.tag)
