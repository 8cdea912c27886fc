//! Time as the core sees it: microseconds on a monotonic clock the driver owns.
//!
//! The real node maps `tokio::time::Instant` onto it; the simulator advances it event by event.

use std::ops::{Add, Sub};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A point in time, in microseconds since the driver's epoch.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Time(pub u64);

impl Time {
    /// The driver's epoch.
    pub const ZERO: Time = Time(0);

    /// A time this long after the epoch.
    pub fn from_duration(d: Duration) -> Self {
        Time(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }

    /// How long after the epoch this is.
    pub fn as_duration(self) -> Duration {
        Duration::from_micros(self.0)
    }

    /// Time elapsed since `earlier`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Time) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Time {
    type Output = Time;
    fn add(self, d: Duration) -> Time {
        Time(
            self.0
                .saturating_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
        )
    }
}

impl Sub<Time> for Time {
    type Output = Duration;
    fn sub(self, earlier: Time) -> Duration {
        self.saturating_since(earlier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Time::from_duration(Duration::from_millis(5));
        assert_eq!((t + Duration::from_millis(1)) - t, Duration::from_millis(1));
        assert_eq!(Time::ZERO - t, Duration::ZERO);
        assert_eq!(Time(u64::MAX) + Duration::from_secs(1), Time(u64::MAX));
    }
}
