//! Writes the seed corpus (`fuzz/seeds/<target>/`): one valid encoding of every message variant,
//! so the fuzzer starts from inputs that get past the first byte. Run from `fuzz/`:
//! `cargo run --example seeds`.

use std::path::Path;

use butter_fuzz::{fixture_item_config, large_item, me, peer, small_item};
use butter_proto::beacon::Beacon;
use butter_proto::item::{Challenge, ItemId, Proof};
use butter_proto::owned;
use butter_proto::pcg::{self, GroupBeat, Heartbeat, View};
use butter_proto::rbfs::{self, Bloom, Query, QueryId};
use butter_proto::wire::{
    self, ErrorCode, MemberState, MemberUpdate, PeerRecord, Request, Response,
};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("seeds").join(target);
    std::fs::create_dir_all(&dir).expect("create seed dir");
    std::fs::write(dir.join(name), bytes).expect("write seed");
}

fn record() -> PeerRecord {
    PeerRecord {
        id: peer(0),
        addrs: vec![
            "192.0.2.1:7000".parse().expect("addr"),
            "[2001:db8::1]:7000".parse().expect("addr"),
        ],
        site: "lan-a".into(),
        uptime_secs: 42,
        storage_free: 1 << 30,
        known_hosts: 9,
        public: true,
        relays: vec![],
    }
}

fn main() {
    let requests = [
        Request::Ping { seq: 1 },
        Request::PingReq {
            seq: 2,
            target: peer(1),
            addrs: record().addrs,
        },
        Request::Hello {
            record: record(),
            network: "butter".into(),
            sample: 16,
        },
        Request::Behaviour {
            name: "echo".into(),
        },
        Request::Overlay { name: "pcg".into() },
        Request::Gossip {
            updates: vec![MemberUpdate {
                id: peer(2),
                incarnation: 3,
                state: MemberState::Suspect,
            }],
        },
    ];
    for (i, r) in requests.iter().enumerate() {
        let f = wire::encode_frame(r, usize::MAX).expect("encodes");
        write("wire_request", &format!("frame-{i}"), &f);
        write(
            "wire_request",
            &format!("payload-{i}"),
            &f[wire::LEN_PREFIX..],
        );
    }
    let responses = [
        Response::Ack { seq: 1 },
        Response::Nack { seq: 2 },
        Response::Hello {
            record: record(),
            observed: "198.51.100.7:40000".parse().expect("addr"),
            sample: vec![record()],
        },
        Response::Ok,
        Response::Error {
            code: ErrorCode::Busy,
            message: "later".into(),
        },
    ];
    for (i, r) in responses.iter().enumerate() {
        let f = wire::encode_frame(r, usize::MAX).expect("encodes");
        write("wire_response", &format!("frame-{i}"), &f);
        write(
            "wire_response",
            &format!("payload-{i}"),
            &f[wire::LEN_PREFIX..],
        );
    }

    let b = Beacon {
        id: peer(0),
        network: "butter".into(),
        addrs: vec![
            "0.0.0.0:7000".parse().expect("addr"),
            "192.0.2.1:7001".parse().expect("addr"),
        ],
        site: "lan-a".into(),
    };
    write("beacon", "beacon-0", &b.encode().expect("encodes"));

    let small = small_item();
    let large = large_item();
    let view = View {
        item: small.id(),
        version: 5,
        author: peer(0),
        members: vec![peer(0), peer(1), me()],
    };
    let manifest = large.manifest(&fixture_item_config()).expect("multi-block");
    let owner = owned::OwnerKey::from_seed([5; 32]);
    let owned_record = owned::Record::sign(&owner, "profile", 3, Some(b"hello".to_vec()))
        .expect("a valid record");
    let tombstone = owned::Record::sign(&owner, "profile", 4, None).expect("a valid tombstone");
    write("owned_record", "value", &owned_record.encode());
    write("owned_record", "tombstone", &tombstone.encode());
    write("owned_record", "key-file", owner.to_file().as_bytes());
    let pcg_msgs = [
        pcg::Message::Heartbeat(Heartbeat {
            reply: false,
            groups: vec![GroupBeat {
                item: small.id(),
                version: 6,
                author: peer(1),
                holding: true,
                view: Some(view.clone()),
                owned: None,
            }],
            challenges: vec![Challenge {
                item: small.id(),
                nonce: 9,
            }],
            proofs: vec![Proof {
                item: small.id(),
                nonce: 9,
                hash: [0; 32],
            }],
        }),
        pcg::Message::ViewUpdate(view.clone()),
        pcg::Message::Replicate {
            view: View {
                item: large.id(),
                ..view.clone()
            },
            content: None,
            manifest: Some(manifest.clone()),
        },
        pcg::Message::Holding { item: small.id() },
        pcg::Message::Decline { item: small.id() },
        pcg::Message::Fetch {
            item: large.id(),
            index: 1,
        },
        pcg::Message::Block {
            item: large.id(),
            index: 0,
            bytes: large.content()[..64].to_vec(),
        },
        pcg::Message::Join { item: small.id() },
        pcg::Message::Trim(view.clone()),
        pcg::Message::Leave { item: small.id() },
        pcg::Message::Delete { item: small.id() },
        pcg::Message::Rival(view.clone()),
        pcg::Message::Rendezvous(vec![view.clone()]),
        pcg::Message::Update {
            item: owned_record.slot(),
            record: owned_record.encode(),
        },
    ];
    let mut sequence = Vec::new();
    for (i, m) in pcg_msgs.iter().enumerate() {
        let body = postcard::to_stdvec(m).expect("encodes");
        write("pcg_message", &format!("msg-{i}"), &body);
        sequence.push(i as u8);
        sequence.extend_from_slice(&body);
    }
    write("pcg_message", "sequence", &sequence);

    let mut bloom = Bloom::new(16, 10);
    bloom.insert(&small.id());
    let rbfs_msgs = [
        rbfs::Message::Query(Query {
            id: QueryId(1),
            item: small.id(),
            origin: peer(1),
            hops: 1,
            ttl: 3,
            budget: 8,
        }),
        rbfs::Message::Hit {
            id: QueryId(2),
            item: large.id(),
            holder: peer(2),
            hops: 2,
            content: Some(large.content().to_vec()),
            manifest: Some(manifest.clone()),
        },
        rbfs::Message::SummaryPull { have: Some(3) },
        rbfs::Message::Summary {
            epoch: 4,
            filter: Some(bloom),
        },
    ];
    let mut sequence = Vec::new();
    for (i, m) in rbfs_msgs.iter().enumerate() {
        let body = postcard::to_stdvec(m).expect("encodes");
        write("rbfs_message", &format!("msg-{i}"), &body);
        sequence.push(i as u8);
        sequence.extend_from_slice(&body);
    }
    write("rbfs_message", "sequence", &sequence);

    let blocks: Vec<(u32, Vec<u8>)> = (0..manifest.blocks.len() as u32)
        .map(|i| (i, large.block(&manifest, i).expect("block").to_vec()))
        .collect();
    write(
        "item_assembly",
        "whole",
        &postcard::to_stdvec(&(manifest.clone(), blocks)).expect("encodes"),
    );
    write(
        "item_assembly",
        "block-request",
        &postcard::to_stdvec(&(large.id(), 2u32)).expect("encodes"),
    );
    write("item_assembly", "mutations", &[0, 200, 4, 1, 3, 7, 7, 3]);

    write("ids", "peer", peer(3).to_string().as_bytes());
    write(
        "ids",
        "item",
        format!(" {} \n", ItemId::of(b"x")).as_bytes(),
    );

    write(
        "config_toml",
        "full",
        br#"listen = "0.0.0.0:7000"
data_dir = "/var/lib/butter"
network = "butter"
site = "lan-a"
bootstrap = ["seed.example:7000", "192.0.2.1:7000"]
alone = false

[multicast]
enabled = true
group = "239.255.42.99:7099"
interfaces = ["eth0"]

[limits]
max_frame = 65536
max_body = 67108864
max_connections = 512
max_streams = 128
request_timeout = 2.5
handshake_timeout = 5
idle_timeout = 30.0

[data]
enabled = true
replicas = 3
storage_bytes = 1073741824
max_item_size = 16777216
heartbeat_secs = 2.0
cache_bytes = 8388608
deletes = true
"#,
    );
    write("config_toml", "empty", b"");
}
