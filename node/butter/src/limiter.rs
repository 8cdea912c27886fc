//! Per-peer request rate limiting and temporary bans.
//!
//! Every authenticated peer gets a token bucket. A request beyond it is refused with `busy`; a peer
//! that keeps flooding past the bucket (`ban_after` refusals more than it was served) is banned
//! for `ban_for`: its connections are closed and new handshakes from
//! its key are refused until the ban ends.
//!
//! A peer caught lying about data (a possession proof that does not match, bytes that do not match
//! their id) gets a strike; `ban_after_lies` strikes, each within [`STRIKE_MEMORY`] of the last,
//! ban it the same way.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use butter_proto::PeerId;
use tokio::time::Instant;

/// Rate-limit settings.
#[derive(Clone, Debug)]
pub struct RateConfig {
    /// Sustained requests per second per peer.
    pub per_second: f64,
    /// Burst size.
    pub burst: f64,
    /// Net refusals (each served request forgives one) before a ban.
    pub ban_after: u32,
    /// Ban length.
    pub ban_for: Duration,
    /// Strikes (lies about data) before a ban.
    pub ban_after_lies: u32,
}

/// Strikes are forgotten when none came for this long.
pub const STRIKE_MEMORY: Duration = Duration::from_secs(600);

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
    refusals: u32,
}

/// What to do with one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Serve it.
    Allow,
    /// Refuse it (`busy`).
    Refuse,
    /// Refuse it and ban the peer now.
    Ban,
}

/// The limiter. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Limiter {
    config: RateConfig,
    buckets: Mutex<HashMap<PeerId, Bucket>>,
    bans: Mutex<HashMap<PeerId, Instant>>,
    strikes: Mutex<HashMap<PeerId, (u32, Instant)>>,
}

impl Limiter {
    /// A limiter with these settings.
    pub fn new(config: RateConfig) -> Self {
        Limiter {
            config,
            buckets: Mutex::new(HashMap::new()),
            bans: Mutex::new(HashMap::new()),
            strikes: Mutex::new(HashMap::new()),
        }
    }

    /// Records that `peer` lied about data; true when this strike bans it.
    pub fn strike(&self, peer: &PeerId, now: Instant) -> bool {
        let mut strikes = self.strikes.lock().unwrap_or_else(|e| e.into_inner());
        if strikes.len() > 65_536 {
            strikes.retain(|_, (_, at)| now.saturating_duration_since(*at) < STRIKE_MEMORY);
        }
        let s = strikes.entry(*peer).or_insert((0, now));
        if now.saturating_duration_since(s.1) >= STRIKE_MEMORY {
            s.0 = 0;
        }
        s.0 += 1;
        s.1 = now;
        if s.0 < self.config.ban_after_lies.max(1) {
            return false;
        }
        strikes.remove(peer);
        drop(strikes);
        self.bans
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(*peer, now + self.config.ban_for);
        true
    }

    /// Accounts one request from `peer`.
    pub fn check(&self, peer: &PeerId, now: Instant) -> Verdict {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > 65_536 {
            // Bounded memory: forget idle peers.
            buckets.retain(|_, b| now.saturating_duration_since(b.at) < Duration::from_secs(60));
        }
        let b = buckets.entry(*peer).or_insert(Bucket {
            tokens: self.config.burst,
            at: now,
            refusals: 0,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.config.per_second).min(self.config.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            // A served request forgives one refusal: a peer that stays far above its rate still
            // accumulates refusals, one that briefly overshoots does not.
            b.refusals = b.refusals.saturating_sub(1);
            return Verdict::Allow;
        }
        b.refusals += 1;
        if b.refusals >= self.config.ban_after {
            b.refusals = 0;
            drop(buckets);
            self.bans
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(*peer, now + self.config.ban_for);
            return Verdict::Ban;
        }
        Verdict::Refuse
    }

    /// Whether `peer` is banned at `now`.
    pub fn is_banned(&self, peer: &PeerId, now: Instant) -> bool {
        let mut bans = self.bans.lock().unwrap_or_else(|e| e.into_inner());
        match bans.get(peer) {
            Some(until) if *until > now => true,
            Some(_) => {
                bans.remove(peer);
                false
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_pass_floods_are_refused_then_banned() {
        let l = Limiter::new(RateConfig {
            per_second: 10.0,
            burst: 5.0,
            ban_after: 20,
            ban_for: Duration::from_secs(30),
            ban_after_lies: 3,
        });
        let p = PeerId::from_public_key(b"p");
        let now = Instant::now();
        for _ in 0..5 {
            assert_eq!(l.check(&p, now), Verdict::Allow);
        }
        assert_eq!(l.check(&p, now), Verdict::Refuse);
        // Tokens refill with time.
        assert_eq!(
            l.check(&p, now + Duration::from_millis(150)),
            Verdict::Allow
        );
        let mut verdict = Verdict::Allow;
        for _ in 0..25 {
            verdict = l.check(&p, now + Duration::from_millis(150));
            if verdict == Verdict::Ban {
                break;
            }
        }
        assert_eq!(verdict, Verdict::Ban);
        assert!(l.is_banned(&p, now + Duration::from_secs(1)));
        assert!(!l.is_banned(&p, now + Duration::from_secs(31)));
        // Another peer is unaffected.
        assert_eq!(l.check(&PeerId::from_public_key(b"q"), now), Verdict::Allow);
    }
}
