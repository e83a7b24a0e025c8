//! Wall-clock timestamps as Unix milliseconds, the one time format on the wire.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn now_unix_ms() -> u64 {
    unix_ms(SystemTime::now())
}
