//! The wire: length-prefixed frames holding versioned, postcard-encoded message enums.
//!
//! Every request is one bidirectional QUIC stream. The opener writes a *header frame* holding a
//! [`Request`], then (optionally) a raw body until it finishes the stream; the responder writes a
//! header frame holding a [`Response`], then its raw body. Keeping bodies outside the encoded header
//! lets items stream at transport speed, and bounds every decoder: a header is at most the configured
//! frame size, a body at most the configured body size.
//!
//! A frame is `u32` big-endian length `L`, then `L` bytes: one version byte
//! ([`PROTOCOL_VERSION`]) and the postcard encoding of the message.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::id::PeerId;

/// The ALPN every Butter connection negotiates.
pub const ALPN: &[u8] = b"butter/1";
/// The version byte at the start of every frame.
pub const PROTOCOL_VERSION: u8 = 1;
/// Bytes of the length prefix.
pub const LEN_PREFIX: usize = 4;
/// Default maximum size of a header frame.
pub const DEFAULT_MAX_FRAME: usize = 64 * 1024;

/// What a node says about itself (and what peers pass on about others).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRecord {
    /// The node's id.
    pub id: PeerId,
    /// Addresses the node listens on for QUIC.
    pub addrs: Vec<SocketAddr>,
    /// Network location label (subnet or configured site name).
    pub site: String,
    /// Seconds the node has been up.
    pub uptime_secs: u64,
    /// Bytes of storage the node still offers.
    pub storage_free: u64,
    /// How many hosts the node knows.
    pub known_hosts: u32,
    /// Whether peers outside the node's LAN have dialled it back successfully.
    pub public: bool,
    /// Relays the node can be reached through when it is not public (at most a few).
    pub relays: Vec<crate::relay::RelayHint>,
}

/// Messages a node opens a stream with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Request {
    /// SWIM direct probe.
    Ping {
        /// Probe sequence number echoed in the ack.
        seq: u64,
    },
    /// SWIM indirect probe: "please ping `target` for me".
    PingReq {
        /// Probe sequence number echoed in the answer.
        seq: u64,
        /// Whom to probe.
        target: PeerId,
        /// Where the target can be reached.
        addrs: Vec<SocketAddr>,
    },
    /// Introduce ourselves and ask for a bounded sample of the peer's known hosts.
    Hello {
        /// Our own record.
        record: PeerRecord,
        /// Network id: nodes of different networks do not talk.
        network: String,
        /// At most how many records we want back.
        sample: u16,
    },
    /// Call an application behaviour by name; the body follows the header.
    Behaviour {
        /// The behaviour's registered name.
        name: String,
    },
    /// A message for an overlay (PCG, RBFS, or an application overlay); the body follows.
    Overlay {
        /// The overlay's registered name.
        name: String,
    },
    /// SWIM dissemination: membership updates (suspicions, refutations, deaths). Answered with
    /// [`Response::Ok`].
    Gossip {
        /// The updates, at most a few dozen.
        updates: Vec<MemberUpdate>,
    },
    /// Opens a relay link (see [`crate::relay`]): the stream stays open and carries
    /// [`crate::relay::Frame`]s both ways; the relay answers with [`crate::relay::Body::Accepted`]
    /// or a refusal.
    Relay {
        /// Whether the opener wants to be reachable through this node.
        register: bool,
    },
}

/// One membership update carried by [`Request::Gossip`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberUpdate {
    /// The member the update is about.
    pub id: PeerId,
    /// The member's incarnation the update refers to; only the member itself raises it.
    pub incarnation: u64,
    /// What is claimed.
    pub state: MemberState,
}

/// What a [`MemberUpdate`] claims about a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum MemberState {
    /// Alive at this incarnation (a refutation when the incarnation is new).
    Alive,
    /// Suspected of having failed at this incarnation.
    Suspect,
    /// Declared failed at this incarnation.
    Dead,
}

/// Messages a node answers a request with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Response {
    /// Answer to [`Request::Ping`] (or a successful [`Request::PingReq`]).
    Ack {
        /// The probe's sequence number.
        seq: u64,
    },
    /// An indirect probe could not reach its target.
    Nack {
        /// The probe's sequence number.
        seq: u64,
    },
    /// Answer to [`Request::Hello`].
    Hello {
        /// The responder's record.
        record: PeerRecord,
        /// The address the responder saw the request come from.
        observed: SocketAddr,
        /// A bounded sample of the responder's known hosts.
        sample: Vec<PeerRecord>,
    },
    /// The behaviour or overlay succeeded; its reply body follows the header.
    Ok,
    /// The request failed.
    Error {
        /// Machine-readable reason.
        code: ErrorCode,
        /// Human-readable detail.
        message: String,
    },
}

/// Why a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The frame could not be decoded.
    Malformed,
    /// The message type is not known to this node.
    UnknownMessage,
    /// The frame carried a protocol version this node does not speak.
    UnsupportedVersion,
    /// The frame or body exceeded the node's limit.
    TooLarge,
    /// No behaviour or overlay is registered under that name.
    UnknownName,
    /// The handler returned an error.
    HandlerFailed,
    /// The node is over its limits; try later.
    Busy,
    /// The peer belongs to another network.
    WrongNetwork,
}

impl ErrorCode {
    /// A stable label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Malformed => "malformed",
            ErrorCode::UnknownMessage => "unknown_message",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::UnknownName => "unknown_name",
            ErrorCode::HandlerFailed => "handler_failed",
            ErrorCode::Busy => "busy",
            ErrorCode::WrongNetwork => "wrong_network",
        }
    }
}

/// Why a frame could not be encoded or decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// Fewer bytes than the length prefix announces.
    #[error("frame truncated: need {need} bytes, have {have}")]
    Truncated {
        /// Bytes the prefix announced (plus prefix).
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// The announced length exceeds the limit.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// Empty frame (no version byte).
    #[error("empty frame")]
    Empty,
    /// Version byte not spoken here.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    /// The message type (enum variant) is unknown.
    #[error("unknown message type")]
    UnknownMessage,
    /// The body does not decode.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Bytes left over after the message.
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
}

impl FrameError {
    /// The error code a responder sends back for this decode failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::TooLarge { .. } => ErrorCode::TooLarge,
            FrameError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            FrameError::UnknownMessage => ErrorCode::UnknownMessage,
            _ => ErrorCode::Malformed,
        }
    }
}

/// Encodes `msg` as a frame (prefix, version byte, postcard body), refusing frames above `max`.
pub fn encode_frame<T: Serialize>(msg: &T, max: usize) -> Result<Vec<u8>, FrameError> {
    // Room for the usual small header up front: growing a 4-byte Vec byte by byte reallocates
    // several times per frame, on every request.
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&[0u8; LEN_PREFIX]);
    out.push(PROTOCOL_VERSION);
    let out = postcard::to_extend(msg, out).map_err(|e| FrameError::Malformed(e.to_string()))?;
    let len = out.len() - LEN_PREFIX;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let mut out = out;
    let prefix = u32::try_from(len).map_err(|_| FrameError::TooLarge { len, max })?;
    out[..LEN_PREFIX].copy_from_slice(&prefix.to_be_bytes());
    Ok(out)
}

/// Reads the length prefix: how many bytes follow it. Checks the limit before anything is buffered.
pub fn frame_len(prefix: [u8; LEN_PREFIX], max: usize) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    if len == 0 {
        return Err(FrameError::Empty);
    }
    Ok(len)
}

/// A top-level wire message: an enum whose variant index comes first in its encoding.
pub trait Message: Serialize + DeserializeOwned {
    /// How many variants this version knows; a higher index is an unknown message, not garbage.
    const VARIANTS: u32;
}

impl Message for Request {
    const VARIANTS: u32 = 7;
}

impl Message for Response {
    const VARIANTS: u32 = 5;
}

/// Reads a postcard varint (u32) at the start of `bytes`.
fn leading_varint(bytes: &[u8]) -> Option<u32> {
    let mut value: u32 = 0;
    for (i, b) in bytes.iter().take(5).enumerate() {
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Decodes the payload of a frame (the bytes after the prefix).
pub fn decode_payload<T: Message>(payload: &[u8]) -> Result<T, FrameError> {
    let (&version, body) = payload.split_first().ok_or(FrameError::Empty)?;
    if version != PROTOCOL_VERSION {
        return Err(FrameError::UnsupportedVersion(version));
    }
    if leading_varint(body).is_some_and(|v| v >= T::VARIANTS) {
        return Err(FrameError::UnknownMessage);
    }
    let (msg, rest) =
        postcard::take_from_bytes::<T>(body).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(FrameError::Trailing(rest.len()));
    }
    Ok(msg)
}

/// Decodes a whole frame (prefix included) that must fill `buf` exactly.
pub fn decode_frame<T: Message>(buf: &[u8], max: usize) -> Result<T, FrameError> {
    if buf.len() < LEN_PREFIX {
        return Err(FrameError::Truncated {
            need: LEN_PREFIX,
            have: buf.len(),
        });
    }
    let mut prefix = [0u8; LEN_PREFIX];
    prefix.copy_from_slice(&buf[..LEN_PREFIX]);
    let len = frame_len(prefix, max)?;
    let payload = &buf[LEN_PREFIX..];
    if payload.len() < len {
        return Err(FrameError::Truncated {
            need: len + LEN_PREFIX,
            have: buf.len(),
        });
    }
    if payload.len() > len {
        return Err(FrameError::Trailing(payload.len() - len));
    }
    decode_payload(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record() -> PeerRecord {
        PeerRecord {
            id: PeerId::from_public_key(b"k"),
            addrs: vec!["127.0.0.1:4000".parse().unwrap()],
            site: "lan-a".into(),
            uptime_secs: 5,
            storage_free: 1 << 30,
            known_hosts: 3,
            public: false,
            relays: vec![],
        }
    }

    #[test]
    fn round_trip_every_request() {
        let reqs = [
            Request::Ping { seq: 7 },
            Request::PingReq {
                seq: 8,
                target: record().id,
                addrs: record().addrs,
            },
            Request::Hello {
                record: record(),
                network: "n".into(),
                sample: 16,
            },
            Request::Behaviour {
                name: "ohce".into(),
            },
            Request::Overlay { name: "pcg".into() },
            Request::Gossip {
                updates: vec![MemberUpdate {
                    id: record().id,
                    incarnation: 3,
                    state: MemberState::Suspect,
                }],
            },
        ];
        for r in reqs {
            let f = encode_frame(&r, DEFAULT_MAX_FRAME).unwrap();
            assert_eq!(decode_frame::<Request>(&f, DEFAULT_MAX_FRAME).unwrap(), r);
        }
    }

    #[test]
    fn unknown_variant_is_reported_as_unknown_message() {
        // Version byte, then variant index 200 (a varint).
        let payload = [PROTOCOL_VERSION, 200, 1];
        assert_eq!(
            decode_payload::<Request>(&payload),
            Err(FrameError::UnknownMessage)
        );
        assert_eq!(FrameError::UnknownMessage.code(), ErrorCode::UnknownMessage);
    }

    #[test]
    fn variant_counts_match_the_enums() {
        // The last known variant decodes; one past it is unknown.
        let last_req = encode_frame(&Request::Relay { register: false }, 64).unwrap();
        assert_eq!(last_req[LEN_PREFIX + 1] as u32, Request::VARIANTS - 1);
        let err = Response::Error {
            code: ErrorCode::Busy,
            message: String::new(),
        };
        let last_resp = encode_frame(&err, 64).unwrap();
        assert_eq!(last_resp[LEN_PREFIX + 1] as u32, Response::VARIANTS - 1);
    }

    #[test]
    fn wrong_version_is_reported() {
        let mut f = encode_frame(&Request::Ping { seq: 1 }, 100).unwrap();
        f[LEN_PREFIX] = 99;
        assert_eq!(
            decode_frame::<Request>(&f, 100),
            Err(FrameError::UnsupportedVersion(99))
        );
    }

    #[test]
    fn oversized_prefix_is_refused_before_reading() {
        assert!(matches!(
            frame_len([0xff; 4], 1024),
            Err(FrameError::TooLarge { .. })
        ));
        assert_eq!(frame_len([0; 4], 1024), Err(FrameError::Empty));
        let big = Request::Behaviour {
            name: "x".repeat(2000),
        };
        assert!(matches!(
            encode_frame(&big, 1000),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn trailing_and_truncated_frames_are_refused() {
        let mut f = encode_frame(&Request::Ping { seq: 1 }, 100).unwrap();
        f.push(0);
        assert!(matches!(
            decode_frame::<Request>(&f, 100),
            Err(FrameError::Trailing(1))
        ));
        f.truncate(f.len() - 2);
        assert!(matches!(
            decode_frame::<Request>(&f, 100),
            Err(FrameError::Truncated { .. })
        ));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_frame::<Request>(&bytes, 256);
            let _ = decode_frame::<Response>(&bytes, 256);
            let _ = decode_payload::<Request>(&bytes);
        }

        #[test]
        fn ping_round_trips(seq in any::<u64>()) {
            let f = encode_frame(&Request::Ping { seq }, 64).unwrap();
            prop_assert_eq!(decode_frame::<Request>(&f, 64).unwrap(), Request::Ping { seq });
        }
    }
}
