//! LAN discovery beacons: their encoding and the announce schedule.
//!
//! ## Encoding
//! A beacon is one UDP datagram: the magic bytes [`MAGIC`], a version byte ([`VERSION`]), then the
//! postcard encoding of [`Beacon`]. [`decode`] never panics on garbage and tells apart what it
//! ignores ([`Ignored`]): malformed bytes, an unknown version, another network, our own beacon
//! (multicast loops back).
//!
//! ## Schedule
//! [`Schedule`] is a [Trickle](https://www.rfc-editor.org/rfc/rfc6206) timer with one addition, an
//! unconditional first beacon:
//! - After start (and whenever the node is alone again, see [`Schedule::restart`]) the node sends
//!   one beacon at a random time in `[0, first_jitter]`. Listeners dial the announcer, so one beacon
//!   per node is enough for every pair to meet: two nodes can only miss each other if *both*
//!   beacons are lost (a node that joined the group late still hears the other's later beacon).
//! - Then Trickle: intervals double from `min_interval` up to a ceiling; in each interval of length
//!   `I` the node picks a time in `[I/2, I)` and sends there **unless** it already heard
//!   `redundancy` beacons from neighbours it knows in that interval (newcomers that hear any one
//!   member reach the rest by peer exchange, so one beacon per interval per LAN is enough). So the
//!   LAN sends about one beacon per interval whatever its size: start-up with `N` nodes costs `N`
//!   first beacons plus one or two per interval (≤ 2·N at N = 30 within the first 10 s).
//! - The ceiling grows with the number of LAN neighbours `n`: `max(steady_interval, (n + 1) /
//!   lan_rate)`, capped at `max_interval`, so even with no suppression at all the LAN as a whole
//!   stays under `lan_rate` packets per second. While the node has no LAN neighbour the ceiling is
//!   `alone_interval`, so a lone node keeps looking.
//! - Hearing a new neighbour's beacon resets the interval to `min_interval` (Trickle's
//!   "inconsistency": the picture is changing) when `reset_on_new_neighbour` is set.
//! - It never stops: the timer always has a next interval, and a node that was suppressed for
//!   `max_silence` sends anyway.

use std::net::SocketAddr;
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::id::PeerId;
use crate::time::Time;

/// The first bytes of every beacon.
pub const MAGIC: [u8; 4] = *b"BTRb";
/// The beacon format version this node writes and reads.
pub const VERSION: u8 = 1;
/// The largest beacon sent or accepted: fits one unfragmented datagram on any LAN.
pub const MAX_BEACON: usize = 1200;

/// What a beacon says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beacon {
    /// The announcer.
    pub id: PeerId,
    /// Its network id; nodes of other networks ignore the beacon.
    pub network: String,
    /// Where it listens for QUIC. An unspecified IP (`0.0.0.0`) means "the address this datagram
    /// came from", see [`Beacon::dial_addrs`].
    pub addrs: Vec<SocketAddr>,
    /// Its site label (subnet or configured).
    pub site: String,
}

/// Why a beacon could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// Too many or too long fields for one datagram.
    #[error("beacon of {0} bytes exceeds {MAX_BEACON}")]
    TooLarge(usize),
    /// The serializer failed.
    #[error("beacon does not encode: {0}")]
    Encode(String),
}

/// Why a received datagram was ignored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Ignored {
    /// Not a beacon, truncated, oversized or undecodable.
    #[error("malformed beacon")]
    Malformed,
    /// A beacon of a version this node does not read.
    #[error("unsupported beacon version {0}")]
    Version(u8),
    /// A beacon of another network.
    #[error("beacon from another network")]
    OtherNetwork,
    /// Our own beacon, looped back.
    #[error("own beacon")]
    Own,
}

impl Ignored {
    /// A stable label for metrics and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Ignored::Malformed => "malformed",
            Ignored::Version(_) => "version",
            Ignored::OtherNetwork => "other_network",
            Ignored::Own => "own",
        }
    }
}

impl Beacon {
    /// Encodes the beacon as one datagram.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        let out = postcard::to_extend(self, out).map_err(|e| EncodeError::Encode(e.to_string()))?;
        if out.len() > MAX_BEACON {
            return Err(EncodeError::TooLarge(out.len()));
        }
        Ok(out)
    }

    /// Where to dial the announcer: each advertised address, with an unspecified IP replaced by
    /// the IP the datagram came from; the source IP with each advertised port comes first, since
    /// it is known to route back.
    pub fn dial_addrs(&self, from: SocketAddr) -> Vec<SocketAddr> {
        let mut out: Vec<SocketAddr> = Vec::new();
        let mut push = |a: SocketAddr| {
            if !out.contains(&a) {
                out.push(a);
            }
        };
        for a in &self.addrs {
            if a.ip() == from.ip() || a.ip().is_unspecified() {
                push(SocketAddr::new(from.ip(), a.port()));
            }
        }
        for a in &self.addrs {
            if !a.ip().is_unspecified() {
                push(*a);
            }
        }
        out
    }
}

/// Decodes a datagram, whoever sent it. Never panics.
pub fn decode(datagram: &[u8]) -> Result<Beacon, Ignored> {
    if datagram.len() > MAX_BEACON
        || datagram.len() < MAGIC.len() + 1
        || datagram[..MAGIC.len()] != MAGIC
    {
        return Err(Ignored::Malformed);
    }
    let version = datagram[MAGIC.len()];
    if version != VERSION {
        return Err(Ignored::Version(version));
    }
    match postcard::take_from_bytes::<Beacon>(&datagram[MAGIC.len() + 1..]) {
        Ok((beacon, [])) => Ok(beacon),
        _ => Err(Ignored::Malformed),
    }
}

/// Decodes a datagram and keeps it only if it is another node's beacon for `network`.
pub fn accept(datagram: &[u8], network: &str, local: &PeerId) -> Result<Beacon, Ignored> {
    let beacon = decode(datagram)?;
    if beacon.network != network {
        return Err(Ignored::OtherNetwork);
    }
    if beacon.id == *local {
        return Err(Ignored::Own);
    }
    Ok(beacon)
}

/// Settings of the announce schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// The first beacon after start or [`Schedule::restart`] goes out at a random time in
    /// `[0, first_jitter]`. Default 200 ms: spreads a simultaneous start of many nodes (and the
    /// dials each beacon triggers) without delaying discovery noticeably.
    pub first_jitter: Duration,
    /// The shortest Trickle interval. Default 500 ms: with the first beacon, a node announces
    /// about three times in its first two seconds unless its LAN is already announcing.
    pub min_interval: Duration,
    /// The ceiling of the interval before the LAN-size rule is applied. Default 30 s.
    pub steady_interval: Duration,
    /// Multicast budget of the whole LAN in steady state, in beacons per second: the ceiling is at
    /// least `(lan_neighbours + 1) / lan_rate`. Default 0.4 (the goal is ≤ 0.5).
    pub lan_rate: f64,
    /// The ceiling while the node has no LAN neighbour. Default 5 s.
    pub alone_interval: Duration,
    /// The ceiling's hard cap. Default 10 min.
    pub max_interval: Duration,
    /// Trickle's redundancy constant: suppress our beacon once this many beacons from known
    /// neighbours were heard in the interval. 0 disables suppression. Default 1.
    pub redundancy: u32,
    /// Reset to `min_interval` on hearing a beacon from a neighbour not in the table. Default on.
    pub reset_on_new_neighbour: bool,
    /// Send even if suppressed when the last own beacon is this old. Default 10 min.
    pub max_silence: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            first_jitter: Duration::from_millis(200),
            min_interval: Duration::from_millis(500),
            steady_interval: Duration::from_secs(30),
            lan_rate: 0.4,
            alone_interval: Duration::from_secs(5),
            max_interval: Duration::from_secs(600),
            redundancy: 1,
            reset_on_new_neighbour: true,
            max_silence: Duration::from_secs(600),
        }
    }
}

/// A beacon schedule setting out of range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `min_interval` must be positive and intervals ordered `min ≤ alone, steady ≤ max`.
    #[error(
        "beacon intervals must satisfy 0 < min_interval <= alone_interval, steady_interval <= max_interval"
    )]
    Intervals,
    /// `lan_rate` must be positive and finite.
    #[error("lan_rate must be positive and finite, got {0}")]
    Rate(f64),
    /// `max_silence` must be at least `min_interval`.
    #[error("max_silence must be at least min_interval")]
    Silence,
}

impl Config {
    /// Checks that every value is in range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let c = self;
        if c.min_interval.is_zero()
            || c.min_interval > c.alone_interval
            || c.min_interval > c.steady_interval
            || c.alone_interval > c.max_interval
            || c.steady_interval > c.max_interval
        {
            return Err(ConfigError::Intervals);
        }
        if !c.lan_rate.is_finite() || c.lan_rate <= 0.0 {
            return Err(ConfigError::Rate(c.lan_rate));
        }
        if c.max_silence < c.min_interval {
            return Err(ConfigError::Silence);
        }
        Ok(())
    }

    /// The interval ceiling for a node with `lan_neighbours` neighbours on its LAN.
    pub fn ceiling(&self, lan_neighbours: usize) -> Duration {
        if lan_neighbours == 0 {
            return self.alone_interval;
        }
        let budget = Duration::from_secs_f64((lan_neighbours as f64 + 1.0) / self.lan_rate);
        self.steady_interval.max(budget).min(self.max_interval)
    }
}

/// When to announce: a Trickle timer (see the [module documentation](self)).
///
/// Drive it with [`Schedule::handle_timeout`] at [`Schedule::poll_timeout`]; report beacons heard
/// with [`Schedule::heard_known`] and [`Schedule::heard_new`].
#[derive(Clone, Debug)]
pub struct Schedule {
    config: Config,
    interval: Duration,
    interval_end: Time,
    fire_at: Option<Time>,
    must_send: bool,
    heard: u32,
    last_sent: Option<Time>,
    started: Time,
}

impl Schedule {
    /// A schedule starting at `now` with the first beacon within `first_jitter`.
    pub fn new<R: Rng + ?Sized>(
        config: Config,
        now: Time,
        rng: &mut R,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut s = Schedule {
            interval: config.min_interval,
            interval_end: now,
            fire_at: None,
            must_send: false,
            heard: 0,
            last_sent: None,
            started: now,
            config,
        };
        s.restart(now, rng);
        Ok(s)
    }

    /// Starts over as if just started: one unconditional beacon within `first_jitter`, then the
    /// shortest interval. Call when the table empties or the listen addresses change.
    pub fn restart<R: Rng + ?Sized>(&mut self, now: Time, rng: &mut R) {
        let jitter = self.config.first_jitter.mul_f64(rng.random::<f64>());
        self.fire_at = Some(now + jitter);
        self.must_send = true;
        self.heard = 0;
        self.interval = self.config.min_interval;
        // The first Trickle interval begins once the first beacon is out (see `handle_timeout`).
        self.interval_end = now + jitter;
        self.started = now;
    }

    /// The current interval length.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// When the node last sent a beacon.
    pub fn last_sent(&self) -> Option<Time> {
        self.last_sent
    }

    /// When the schedule was last (re)started.
    pub fn started(&self) -> Time {
        self.started
    }

    /// When [`Schedule::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Time {
        match self.fire_at {
            Some(t) => t.min(self.interval_end),
            None => self.interval_end,
        }
    }

    /// Advances the timer; returns whether to send a beacon now. `lan_neighbours` (hosts on the
    /// node's own LAN it knows) sets the interval ceiling.
    pub fn handle_timeout<R: Rng + ?Sized>(
        &mut self,
        now: Time,
        lan_neighbours: usize,
        rng: &mut R,
    ) -> bool {
        let mut send = false;
        if let Some(at) = self.fire_at
            && at <= now
        {
            self.fire_at = None;
            let silent_too_long = self
                .last_sent
                .is_none_or(|t| now.saturating_since(t) >= self.config.max_silence);
            let suppressed = self.config.redundancy > 0 && self.heard >= self.config.redundancy;
            if self.must_send || !suppressed || silent_too_long {
                send = true;
                self.last_sent = Some(now);
            }
            if self.must_send {
                // The first beacon is out: the first Trickle interval starts now.
                self.must_send = false;
                self.start_interval(now, self.config.min_interval, rng);
                return send;
            }
        }
        if self.interval_end <= now && self.fire_at.is_none() {
            let ceiling = self
                .config
                .ceiling(lan_neighbours)
                .max(self.config.min_interval);
            let next = (self.interval * 2).min(ceiling);
            self.start_interval(now, next, rng);
        }
        send
    }

    /// A beacon from a neighbour already in the table was heard: counts toward suppression.
    pub fn heard_known(&mut self) {
        self.heard = self.heard.saturating_add(1);
    }

    /// A beacon from a neighbour not in the table was heard: the picture is changing, so go back
    /// to the shortest interval (unless already there, or disabled by configuration).
    pub fn heard_new<R: Rng + ?Sized>(&mut self, now: Time, rng: &mut R) {
        if self.config.reset_on_new_neighbour
            && !self.must_send
            && self.interval > self.config.min_interval
        {
            self.start_interval(now, self.config.min_interval, rng);
        }
    }

    fn start_interval<R: Rng + ?Sized>(&mut self, now: Time, length: Duration, rng: &mut R) {
        self.interval = length;
        self.interval_end = now + length;
        let half = length / 2;
        self.fire_at = Some(now + half + half.mul_f64(rng.random::<f64>()));
        self.heard = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn beacon() -> Beacon {
        Beacon {
            id: PeerId::from_public_key(b"a"),
            network: "net".into(),
            addrs: vec![
                "0.0.0.0:7000".parse().unwrap(),
                "192.168.1.4:7000".parse().unwrap(),
            ],
            site: "lan".into(),
        }
    }

    #[test]
    fn round_trip_and_classification() {
        let b = beacon();
        let bytes = b.encode().unwrap();
        assert_eq!(&bytes[..4], &MAGIC);
        assert_eq!(decode(&bytes), Ok(b.clone()));
        let other = PeerId::from_public_key(b"b");
        assert_eq!(accept(&bytes, "net", &other), Ok(b.clone()));
        assert_eq!(accept(&bytes, "other", &other), Err(Ignored::OtherNetwork));
        assert_eq!(accept(&bytes, "net", &b.id), Err(Ignored::Own));
        let mut v2 = bytes.clone();
        v2[4] = 2;
        assert_eq!(decode(&v2), Err(Ignored::Version(2)));
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(decode(&trailing), Err(Ignored::Malformed));
        assert_eq!(decode(&bytes[..bytes.len() - 1]), Err(Ignored::Malformed));
        assert_eq!(decode(b"hello world"), Err(Ignored::Malformed));
        assert_eq!(decode(&[]), Err(Ignored::Malformed));
    }

    #[test]
    fn oversized_beacons_are_refused() {
        let mut b = beacon();
        b.addrs = vec!["[::1]:1".parse().unwrap(); 200];
        assert!(matches!(b.encode(), Err(EncodeError::TooLarge(_))));
    }

    #[test]
    fn dial_addrs_prefer_the_source_ip() {
        let from: SocketAddr = "10.1.2.3:5353".parse().unwrap();
        let addrs = beacon().dial_addrs(from);
        assert_eq!(
            addrs,
            vec![
                "10.1.2.3:7000".parse().unwrap(),
                "192.168.1.4:7000".parse().unwrap()
            ]
        );
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
            let _ = decode(&bytes);
            let mut with_magic = MAGIC.to_vec();
            with_magic.push(VERSION);
            with_magic.extend_from_slice(&bytes);
            let _ = decode(&with_magic);
        }
    }

    /// Runs one schedule alone for `secs`, returning send times.
    fn run_alone(secs: u64, lan_neighbours: usize, seed: u64) -> Vec<Time> {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut s = Schedule::new(Config::default(), Time::ZERO, &mut rng).unwrap();
        let end = Time::from_duration(Duration::from_secs(secs));
        let mut sent = Vec::new();
        loop {
            let t = s.poll_timeout();
            if t > end {
                break;
            }
            if s.handle_timeout(t, lan_neighbours, &mut rng) {
                sent.push(t);
            }
        }
        sent
    }

    #[test]
    fn first_beacon_is_quick_then_backs_off_but_never_stops() {
        let sent = run_alone(3600, 5, 1);
        assert!(sent[0] <= Time::from_duration(Duration::from_millis(200)));
        assert!(
            sent.iter()
                .filter(|t| **t <= Time::from_duration(Duration::from_secs(2)))
                .count()
                >= 3
        );
        // Steady: ceiling max(30 s, 6 / 0.4 = 15 s) = 30 s; never longer gaps, never stops.
        let gaps: Vec<Duration> = sent.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(
            gaps.iter().all(|g| *g <= Duration::from_secs(60)),
            "{gaps:?}"
        );
        assert!(sent.last().unwrap() > &Time::from_duration(Duration::from_secs(3500)));
        // Interval grows with the LAN: 29 neighbours -> 75 s ceiling.
        let big = run_alone(3600, 29, 2);
        let rate = big.len() as f64 / 3600.0;
        assert!(
            rate * 30.0 <= 0.5,
            "30 unsuppressed nodes would send {} per s",
            rate * 30.0
        );
    }

    #[test]
    fn alone_the_node_keeps_looking() {
        let sent = run_alone(120, 0, 3);
        let gaps: Vec<Duration> = sent.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(
            gaps.iter().all(|g| *g <= Duration::from_secs(10)),
            "{gaps:?}"
        );
    }

    #[test]
    fn hearing_known_neighbours_suppresses_and_a_new_one_resets() {
        let mut rng = SmallRng::seed_from_u64(4);
        let mut s = Schedule::new(Config::default(), Time::ZERO, &mut rng).unwrap();
        // The first beacon is unconditional even if others were heard.
        s.heard_known();
        let t = s.poll_timeout();
        assert!(s.handle_timeout(t, 3, &mut rng));
        // In the next interval, one known beacon suppresses ours.
        s.heard_known();
        let t = s.poll_timeout();
        assert!(!s.handle_timeout(t, 3, &mut rng));
        // Let it back off a few intervals.
        for _ in 0..12 {
            let t = s.poll_timeout();
            s.handle_timeout(t, 3, &mut rng);
        }
        assert!(s.interval() > Duration::from_secs(4));
        let now = s.poll_timeout();
        s.heard_new(now, &mut rng);
        assert_eq!(s.interval(), Config::default().min_interval);
        assert!(s.poll_timeout() <= now + Duration::from_millis(500));
    }

    #[test]
    fn restart_sends_again_quickly() {
        let mut rng = SmallRng::seed_from_u64(5);
        let mut s = Schedule::new(Config::default(), Time::ZERO, &mut rng).unwrap();
        for _ in 0..20 {
            let t = s.poll_timeout();
            s.handle_timeout(t, 3, &mut rng);
        }
        let now = s.poll_timeout();
        s.restart(now, &mut rng);
        let t = s.poll_timeout();
        assert!(t <= now + Duration::from_millis(200));
        s.heard_known();
        assert!(s.handle_timeout(t, 0, &mut rng));
    }

    #[test]
    fn config_validation() {
        Config::default().validate().unwrap();
        assert!(
            Config {
                min_interval: Duration::ZERO,
                ..Config::default()
            }
            .validate()
            .is_err()
        );
        assert!(
            Config {
                lan_rate: 0.0,
                ..Config::default()
            }
            .validate()
            .is_err()
        );
        assert_eq!(Config::default().ceiling(29), Duration::from_secs(75));
        assert_eq!(Config::default().ceiling(0), Duration::from_secs(5));
    }
}
