//! The checks behind every fuzz target. Each `check_*` function takes arbitrary bytes, runs them
//! through one decoder the way a node does, and asserts invariants beyond "does not panic":
//! whatever decodes re-encodes (no longer than the input) and decodes to the same value, limits hold,
//! and hostile input fed to the state machines never leaves an unverified item in a store.
//!
//! The targets in `fuzz_targets/` are one line each; keeping the checks here lets `seeds` reuse the
//! fixtures.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::net::SocketAddr;

use butter_proto::beacon::{self, Beacon, Ignored};
use butter_proto::item::{self, Assembler, Item, ItemId, Manifest, MemoryStore, Store};
use butter_proto::pcg::{self, HostView};
use butter_proto::rbfs;
use butter_proto::wire::{self, FrameError, LEN_PREFIX, PROTOCOL_VERSION};
use butter_proto::{PeerId, Time};

/// A postcard varint (u32) at the start of `bytes`, as the wire's variant check reads it.
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

/// `frame_len` against one limit: accepts exactly the lengths in `1..=max`.
fn check_frame_len(prefix: [u8; LEN_PREFIX], max: usize) {
    let n = u32::from_be_bytes(prefix) as usize;
    match wire::frame_len(prefix, max) {
        Ok(len) => assert!(
            len == n && len >= 1 && len <= max,
            "{len} accepted, max {max}"
        ),
        Err(FrameError::TooLarge { len, max: m }) => assert!(len == n && n > max && m == max),
        Err(FrameError::Empty) => assert_eq!(n, 0),
        Err(e) => panic!("frame_len returned {e:?}"),
    }
}

/// A decoded message re-encodes as a frame no longer than `input_len`, and that frame is a fixpoint.
fn check_wire_round_trip<T: wire::Message + Debug + PartialEq>(msg: &T, input_len: usize) {
    let frame = wire::encode_frame(msg, usize::MAX).expect("a decoded message re-encodes");
    assert!(
        frame.len() <= input_len,
        "re-encoding grew: {} > {input_len}",
        frame.len()
    );
    let max = frame.len() - LEN_PREFIX;
    let back: T = wire::decode_frame(&frame, max).expect("a re-encoded frame decodes");
    assert_eq!(&back, msg);
    let again = wire::encode_frame(&back, max).expect("encodes under its own length");
    assert_eq!(again, frame, "encoding is not canonical");
}

/// `decode_payload` on `payload`, and `decode_frame` on the same payload under a valid prefix (the
/// two must agree), then `decode_frame` on the raw bytes as a whole frame.
pub fn check_wire<T: wire::Message + Debug + PartialEq>(data: &[u8]) {
    if data.len() >= LEN_PREFIX {
        let prefix: [u8; LEN_PREFIX] = data[..LEN_PREFIX].try_into().expect("4 bytes");
        for max in [0, 1, 255, wire::DEFAULT_MAX_FRAME, data.len(), usize::MAX] {
            check_frame_len(prefix, max);
        }
    }

    // The bytes as a payload.
    let payload = wire::decode_payload::<T>(data);
    match &payload {
        Ok(msg) => {
            assert_eq!(data[0], PROTOCOL_VERSION);
            assert!(leading_varint(&data[1..]).is_some_and(|v| v < T::VARIANTS));
            check_wire_round_trip(msg, data.len() + LEN_PREFIX);
        }
        Err(FrameError::UnknownMessage) => {
            assert!(leading_varint(&data[1..]).is_some_and(|v| v >= T::VARIANTS));
        }
        Err(FrameError::UnsupportedVersion(v)) => assert_ne!(*v, PROTOCOL_VERSION),
        Err(FrameError::Empty) => assert!(data.is_empty()),
        Err(FrameError::Malformed(_) | FrameError::Trailing(_)) => {}
        Err(e) => panic!("decode_payload returned {e:?}"),
    }
    if let Ok(len) = u32::try_from(data.len()) {
        let mut framed = len.to_be_bytes().to_vec();
        framed.extend_from_slice(data);
        let whole = wire::decode_frame::<T>(&framed, data.len().max(1));
        if data.is_empty() {
            assert_eq!(whole, Err(FrameError::Empty));
        } else {
            assert_eq!(whole, payload, "decode_frame and decode_payload disagree");
        }
        if data.len() > 1 {
            // One byte under the limit: refused before the payload is looked at.
            let refused = wire::decode_frame::<T>(&framed, data.len() - 1);
            assert!(
                matches!(refused, Err(FrameError::TooLarge { .. })),
                "{refused:?}"
            );
        }
    }

    // The bytes as a whole frame.
    if let Ok(msg) = wire::decode_frame::<T>(data, wire::DEFAULT_MAX_FRAME) {
        assert!(data.len() <= wire::DEFAULT_MAX_FRAME + LEN_PREFIX);
        check_wire_round_trip(&msg, data.len());
    }
}

/// `beacon::decode` and `beacon::accept` on a datagram, then `dial_addrs` from a source taken from
/// the input.
pub fn check_beacon(data: &[u8]) {
    let decoded = beacon::decode(data);
    match &decoded {
        Ok(b) => {
            assert!(data.len() <= beacon::MAX_BEACON);
            let enc = b.encode().expect("a decoded beacon re-encodes");
            assert!(enc.len() <= data.len(), "re-encoding grew");
            assert_eq!(beacon::decode(&enc).as_ref(), Ok(b));
            assert_eq!(
                b.encode().as_ref(),
                Ok(&enc),
                "encoding is not deterministic"
            );
            let other = PeerId([0xee; 32]);
            let local = if b.id == other {
                PeerId([0xdd; 32])
            } else {
                other
            };
            assert_eq!(beacon::accept(data, &b.network, &local).as_ref(), Ok(b));
            assert_eq!(beacon::accept(data, &b.network, &b.id), Err(Ignored::Own));
            let elsewhere = format!("{}-other", b.network);
            assert_eq!(
                beacon::accept(data, &elsewhere, &local),
                Err(Ignored::OtherNetwork)
            );
            check_dial_addrs(b, data);
        }
        Err(Ignored::Version(v)) => {
            assert_ne!(*v, beacon::VERSION);
            assert_eq!(&data[..4], &beacon::MAGIC);
        }
        Err(Ignored::Malformed) => {}
        Err(e) => panic!("decode returned {e:?}"),
    }
    // `accept` never accepts what `decode` refuses.
    if decoded.is_err() {
        assert!(beacon::accept(data, "butter", &PeerId([0; 32])).is_err());
    }
}

fn check_dial_addrs(b: &Beacon, data: &[u8]) {
    let sources: [SocketAddr; 3] = [
        SocketAddr::from(([10, 0, 0, data.len() as u8], 7000)),
        b.addrs
            .first()
            .copied()
            .unwrap_or(SocketAddr::from(([0; 4], 1))),
        "[fe80::1]:7000".parse().expect("an address"),
    ];
    for from in sources {
        let out = b.dial_addrs(from);
        assert!(out.len() <= 2 * b.addrs.len());
        let unique: BTreeSet<_> = out.iter().collect();
        assert_eq!(unique.len(), out.len(), "duplicate dial addresses");
        for a in &out {
            assert!(
                a.ip() == from.ip() || b.addrs.contains(a),
                "{a} is neither advertised nor the source"
            );
            if !from.ip().is_unspecified() {
                assert!(!a.ip().is_unspecified(), "dialling an unspecified address");
            }
        }
    }
}

/// A fixed membership picture for the state-machine stages.
pub struct Hosts {
    me: PeerId,
    all: Vec<PeerId>,
}

impl Hosts {
    /// The fixture: this node is `me()`, its peers are `peer(0..4)`.
    pub fn new() -> Self {
        Hosts {
            me: me(),
            all: (0..4).map(peer).collect(),
        }
    }
}

impl Default for Hosts {
    fn default() -> Self {
        Hosts::new()
    }
}

impl HostView for Hosts {
    fn live_hosts(&self) -> Vec<PeerId> {
        self.all.iter().copied().filter(|p| *p != self.me).collect()
    }
    fn is_live(&self, id: &PeerId) -> bool {
        *id != peer(3)
    }
    fn site(&self, id: &PeerId) -> Option<&str> {
        self.all
            .iter()
            .position(|p| p == id)
            .map(|i| ["a", "b", "c", "d"][i])
    }
    fn most_diverse(&self, k: usize, exclude: &BTreeSet<PeerId>) -> Vec<PeerId> {
        self.live_hosts()
            .into_iter()
            .filter(|p| !exclude.contains(p) && self.is_live(p))
            .take(k)
            .collect()
    }
}

/// The node under test in the state-machine stages.
pub fn me() -> PeerId {
    PeerId([0xa0; 32])
}

/// Its peers.
pub fn peer(i: u8) -> PeerId {
    PeerId([i + 1; 32])
}

/// The small item the PCG fixture holds (so hostile messages can be about a known group).
pub fn small_item() -> Item {
    Item::new(b"a small item held by the fixture".to_vec())
}

/// A multi-block item under [`fixture_item_config`].
pub fn large_item() -> Item {
    Item::new((0..200u32).map(|i| (i * 7 % 251) as u8).collect())
}

/// Small blocks so manifests are cheap to fuzz.
pub fn fixture_item_config() -> item::Config {
    item::Config {
        block_size: 64,
        max_item_size: 4096,
    }
}

fn assert_store_verified(store: &MemoryStore) {
    for id in store.ids() {
        let it = store.get(&id).expect("listed items are held");
        assert_eq!(it.id(), id);
        assert!(
            it.is_intact(),
            "store holds bytes that are not a valid value of their id (hash or owner signature)"
        );
    }
}

/// Messages decoded one after another from `data` (each prefixed by a sender byte) the way the
/// node decodes an overlay body.
fn messages<M: serde::de::DeserializeOwned>(mut data: &[u8]) -> Vec<(PeerId, M)> {
    let mut out = Vec::new();
    while let Some((&who, rest)) = data.split_first() {
        let Ok((msg, rest)) = postcard::take_from_bytes::<M>(rest) else {
            break;
        };
        out.push((peer(who % 5), msg));
        data = rest;
    }
    out
}

/// A body that decodes re-encodes no longer and decodes to the same value.
fn check_postcard_round_trip<M>(msg: &M, input_len: usize)
where
    M: serde::Serialize + serde::de::DeserializeOwned + PartialEq + Debug,
{
    let enc = postcard::to_stdvec(msg).expect("a decoded message re-encodes");
    assert!(enc.len() <= input_len, "re-encoding grew");
    let back: M = postcard::from_bytes(&enc).expect("a re-encoded message decodes");
    assert_eq!(&back, msg);
    assert_eq!(
        postcard::to_stdvec(&back).expect("encodes"),
        enc,
        "not canonical"
    );
}

/// A PCG overlay body (as `postcard::from_bytes`, like the node), then a sequence of messages
/// delivered to a PCG node that holds [`small_item`].
pub fn check_pcg(data: &[u8]) {
    if let Ok(msg) = postcard::from_bytes::<pcg::Message>(data) {
        let _ = (msg.kind(), msg.data_bytes());
        check_postcard_round_trip(&msg, data.len());
    }

    let hosts = Hosts::new();
    let config = pcg::Config {
        item: fixture_item_config(),
        ..pcg::Config::default()
    };
    let Ok(mut node) = pcg::Node::new(me(), config, MemoryStore::new(1 << 16), 7) else {
        panic!("fixture config is valid");
    };
    let mut now = Time::ZERO;
    node.store_item(now, small_item().content().to_vec(), &hosts)
        .expect("fixture item fits");
    node.store_item(now, large_item().content().to_vec(), &hosts)
        .expect("fixture item fits");
    for (from, msg) in messages::<pcg::Message>(data).into_iter().take(16) {
        now = Time::from_duration(now.as_duration() + std::time::Duration::from_millis(700));
        node.handle_message(now, from, msg, &hosts);
        if node.poll_timeout().is_some_and(|t| t <= now) {
            node.handle_timeout(now, &hosts);
        }
        while let Some(t) = node.poll_transmit() {
            postcard::to_stdvec(&t.msg).expect("outgoing messages encode");
        }
        while node.poll_event().is_some() {}
        assert_store_verified(node.store());
    }
    now = Time::from_duration(now.as_duration() + std::time::Duration::from_secs(30));
    node.handle_timeout(now, &hosts);
    let _ = node.states(&hosts);
    assert_store_verified(node.store());
}

/// An RBFS overlay body, then a sequence of messages delivered to an RBFS node with a search
/// running and a store holding [`small_item`].
pub fn check_rbfs(data: &[u8]) {
    if let Ok(msg) = postcard::from_bytes::<rbfs::Message>(data) {
        let _ = (msg.kind(), msg.query_id());
        check_postcard_round_trip(&msg, data.len());
        if let rbfs::Message::Summary {
            filter: Some(mut bloom),
            ..
        } = msg
        {
            // A peer's filter is only ever queried; a hostile one must not panic when it is.
            let id = small_item().id();
            let _ = (bloom.contains(&id), bloom.byte_len());
            bloom.insert(&id);
            assert!(
                bloom.byte_len() <= 8 || bloom.contains(&id),
                "no false negatives"
            );
        }
    }

    let hosts = Hosts::new();
    let config = rbfs::Config {
        item: fixture_item_config(),
        ..rbfs::Config::default()
    };
    let mut node = rbfs::Node::new(me(), config, 11).expect("fixture config is valid");
    let mut store = MemoryStore::new(1 << 16);
    store.insert(small_item()).expect("fits");
    let mut now = Time::ZERO;
    node.start(now);
    node.find(now, large_item().id(), &store, &hosts);
    for (from, msg) in messages::<rbfs::Message>(data).into_iter().take(16) {
        now = Time::from_duration(now.as_duration() + std::time::Duration::from_millis(300));
        node.handle_message(now, from, msg, &store, &hosts);
        if node.poll_timeout().is_some_and(|t| t <= now) {
            node.handle_timeout(now, &store, &hosts);
        }
        while let Some(t) = node.poll_transmit() {
            postcard::to_stdvec(&t.msg).expect("outgoing messages encode");
        }
        while let Some(ev) = node.poll_event() {
            if let rbfs::Event::Found {
                item,
                content: Some(it),
                ..
            } = ev
            {
                assert_eq!(it.id(), item, "found content is verified against the id");
                assert_eq!(ItemId::of(it.content()), item);
            }
        }
    }
    now = Time::from_duration(now.as_duration() + std::time::Duration::from_secs(60));
    node.handle_timeout(now, &store, &hosts);
}

/// Hostile manifests and blocks: `data` is a postcard `(Manifest, Vec<(u32, Vec<u8>)>)` (or, if it
/// is not, the blocks of [`large_item`] mutated by the input). The assembler never yields an item
/// whose id differs from the manifest's, nor one of another size.
pub fn check_item(data: &[u8]) {
    let config = fixture_item_config();
    // The node's block-request body.
    if let Ok((id, index)) = postcard::from_bytes::<(ItemId, u32)>(data) {
        let it = large_item();
        let manifest = it.manifest(&config).expect("multi-block");
        if let Some(b) = it.block(&manifest, index) {
            assert!(b.len() <= config.block_size && !b.is_empty());
            assert_eq!(ItemId::of(b), manifest.blocks[index as usize]);
        } else {
            assert!(index as usize >= manifest.blocks.len());
        }
        let _ = it.prove(u64::from(index), &config);
        let _ = id;
    }

    let Ok(((manifest, blocks), _)) =
        postcard::take_from_bytes::<(Manifest, Vec<(u32, Vec<u8>)>)>(data)
    else {
        assemble_mutated(data, &config);
        return;
    };
    assemble(manifest, blocks, &config);
}

fn assemble(manifest: Manifest, blocks: Vec<(u32, Vec<u8>)>, config: &item::Config) {
    let checked = manifest.check(config);
    let asm = Assembler::new(manifest.clone(), config);
    assert_eq!(checked.is_ok(), asm.is_ok());
    let Ok(mut asm) = asm else { return };
    assert!(manifest.size <= config.max_item_size as u64);
    for (index, bytes) in blocks {
        let want = manifest.blocks.get(index as usize).copied();
        let ok = asm.add(index, bytes.clone()).is_ok();
        assert_eq!(
            ok,
            want == Some(ItemId::of(&bytes)),
            "block {index} judged wrongly"
        );
    }
    let missing = asm.missing();
    assert_eq!(missing.is_empty(), asm.is_complete());
    if let Ok(item) = asm.finish() {
        assert!(missing.is_empty());
        assert_eq!(item.id(), manifest.item, "assembled item has another id");
        assert_eq!(ItemId::of(item.content()), manifest.item);
        assert_eq!(item.len() as u64, manifest.size);
    }
}

/// The genuine manifest of [`large_item`] with fields and blocks overwritten from `data`.
fn assemble_mutated(data: &[u8], config: &item::Config) {
    let it = large_item();
    let mut manifest = it.manifest(config).expect("multi-block");
    let mut blocks: Vec<(u32, Vec<u8>)> = (0..manifest.blocks.len() as u32)
        .map(|i| (i, it.block(&manifest, i).expect("in range").to_vec()))
        .collect();
    let mut d = data.iter().copied();
    while let Some(op) = d.next() {
        let arg = d.next().unwrap_or(0);
        match op % 8 {
            0 => manifest.size = manifest.size.wrapping_add(u64::from(arg)).wrapping_sub(128),
            1 => manifest.block_size = u32::from(arg),
            2 => {
                manifest.blocks.pop();
            }
            3 => manifest.blocks.push(ItemId::of(&[arg])),
            4 if !blocks.is_empty() => {
                let i = usize::from(arg) % blocks.len();
                let b = &mut blocks[i].1;
                if !b.is_empty() {
                    let j = usize::from(d.next().unwrap_or(0)) % b.len();
                    b[j] ^= d.next().unwrap_or(1).max(1);
                }
            }
            5 if !blocks.is_empty() => {
                let i = usize::from(arg) % blocks.len();
                blocks.remove(i);
            }
            6 => blocks.push((u32::from(arg), vec![arg; usize::from(arg)])),
            7 => manifest.item.0[usize::from(arg) % 32] ^= 1,
            _ => {}
        }
    }
    assemble(manifest, blocks, config);
}

/// `PeerId` and `ItemId` from strings: accepted exactly for 64 hex digits (after trimming), and
/// printing what parsed gives back the lowercase digits.
pub fn check_ids(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let t = s.trim();
    let well_formed = t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit());
    let p = s.parse::<PeerId>();
    let i = s.parse::<ItemId>();
    assert_eq!(p.is_ok(), well_formed, "{s:?}");
    assert_eq!(i.is_ok(), well_formed, "{s:?}");
    if let (Ok(p), Ok(i)) = (p, i) {
        assert_eq!(p.0, i.0);
        assert_eq!(p.to_string(), t.to_ascii_lowercase());
        assert_eq!(i.to_string(), t.to_ascii_lowercase());
        assert_eq!(p.to_string().parse::<PeerId>(), Ok(p));
        assert_eq!(p.short().len(), 10);
        assert_eq!(i.short().len(), 10);
    }
}

/// The node's TOML config: `toml::from_str::<butter::Config>` then `validate`. A config that
/// validates prints back to TOML that parses to a config that validates too.
pub fn check_config(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = toml::from_str::<butter::Config>(s) else {
        return;
    };
    if cfg.validate().is_err() {
        return;
    }
    let text = toml::to_string(&cfg).expect("a valid config prints");
    let back: butter::Config = toml::from_str(&text).expect("a printed config parses");
    back.validate().expect("a printed valid config stays valid");
    // Durations travel as f64 seconds, so compare everything but them exactly.
    let mut a = cfg.clone();
    let mut b = back.clone();
    for l in [&mut a.limits, &mut b.limits] {
        l.request_timeout = std::time::Duration::ZERO;
        l.handshake_timeout = std::time::Duration::ZERO;
        l.idle_timeout = std::time::Duration::ZERO;
    }
    assert_eq!(a, b);
    for (x, y) in [
        (cfg.limits.request_timeout, back.limits.request_timeout),
        (cfg.limits.handshake_timeout, back.limits.handshake_timeout),
        (cfg.limits.idle_timeout, back.limits.idle_timeout),
    ] {
        assert!(
            x.abs_diff(y) <= std::time::Duration::from_nanos(1),
            "{x:?} vs {y:?}"
        );
    }
}

/// Relay link frames: a decoded frame re-encodes to an equal frame (a frame is a struct led by a
/// `usize` length, not an enum, so [`check_wire`]'s variant-index invariants do not apply), then
/// it is routed by a relay with a few attached peers, arriving on each of their links. Routing
/// never panics, never sends to the relay itself, and every frame it emits fits the route bound.
pub fn check_relay_frame(data: &[u8]) {
    use butter_proto::relay::{self, Frame, Relay, Routed};
    let Ok(frame) = wire::decode_payload::<Frame>(data) else {
        return;
    };
    let encoded = wire::encode_frame(&frame, usize::MAX).expect("a decoded frame encodes");
    let back = wire::decode_frame::<Frame>(&encoded, usize::MAX).expect("and decodes again");
    assert_eq!(back, frame);
    let me = butter_proto::PeerId([0xee; 32]);
    let mut r = Relay::new(
        me,
        relay::Limits {
            max_sessions: 2,
            session_bytes: 4096,
            ..relay::Limits::default()
        },
    );
    let peers: Vec<butter_proto::PeerId> = (0u8..3)
        .map(|i| butter_proto::PeerId([i; 32]))
        .chain(frame.to.iter().copied().take(1))
        .collect();
    for (i, p) in peers.iter().enumerate() {
        let addr = std::net::SocketAddr::from(([192, 0, 2, i as u8], 7000));
        let _ = r.attach(*p, addr, i % 2 == 0, false);
    }
    for (i, link) in peers.iter().enumerate() {
        let now = butter_proto::Time::from_duration(std::time::Duration::from_secs(i as u64));
        match r.route(now, *link, frame.clone()) {
            Routed::Send(out) => {
                for (next, f) in out {
                    assert_ne!(next, me, "a relay never sends to itself");
                    assert!(f.to.len() + f.from.len() <= relay::MAX_ROUTE);
                }
            }
            Routed::Local(_) | Routed::Drop => {}
            _ => {}
        }
    }
    r.handle_timeout(butter_proto::Time::from_duration(std::time::Duration::from_secs(3600)));
}

/// An owned record (`owned::Record::decode`, as a node checks a `pcg::Message::Update` or an
/// owned item's content) and the readers around it: what decodes and verifies re-encodes to the
/// same bytes, is a valid value of its slot, and its cheap version read agrees; nothing panics
/// on garbage, with or without the record header in front.
pub fn check_owned(data: &[u8]) {
    use butter_proto::owned::{self, Record};
    for bytes in [data.to_vec(), {
        let mut framed = owned::MAGIC.to_vec();
        framed.push(1);
        framed.extend_from_slice(data);
        framed
    }] {
        let _ = owned::version_of(&bytes);
        let unverified = Record::decode_unverified(&bytes);
        match Record::decode(&bytes) {
            Ok(r) => {
                assert!(bytes.len() <= owned::MAX_RECORD);
                assert_eq!(r.encode(), bytes, "a verified record re-encodes to its bytes");
                assert_eq!(owned::version_of(&bytes), Some(r.version()));
                assert!(Item::verified(r.slot(), bytes.clone()).is_ok());
                assert!(owned::check_name(r.name()).is_ok());
            }
            Err(_) => {
                // Bytes in the record space that are no record are no item either.
                if owned::is_owned_content(&bytes) {
                    let id = unverified
                        .as_ref()
                        .map_or_else(|_| ItemId::of(&bytes), Record::slot);
                    assert!(Item::verified(id, bytes.clone()).is_err());
                    assert!(Item::verified(ItemId::of(&bytes), bytes.clone()).is_err());
                }
            }
        }
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = s.parse::<owned::OwnerId>();
        let _ = owned::OwnerKey::from_file(s);
    }
}
