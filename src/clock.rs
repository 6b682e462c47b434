//! Wall-clock time as stored in files and shown to admins: whole seconds
//! since the Unix epoch. Below every layer.

/// Seconds since the Unix epoch (0 for a clock set before 1970: a time
/// stamp is never worth a failure).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn now_is_in_seconds_not_millis() {
        let t = super::unix_now();
        // After 2020, and not milli- or nanoseconds.
        assert!((1_577_836_800..10_000_000_000).contains(&t), "{t}");
    }
}
