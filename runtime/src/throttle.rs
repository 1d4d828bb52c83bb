//! Repeated errors logged once per interval with a count, instead of once
//! per message: an outage of a stream would otherwise log a line for every
//! delivery that meets it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often one kind of repeated error is logged.
const EVERY: Duration = Duration::from_secs(10);

/// One handler's repeated errors, by kind.
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    seen: Mutex<HashMap<&'static str, Seen>>,
}

#[derive(Debug)]
struct Seen {
    logged: Instant,
    suppressed: u64,
}

impl Throttle {
    /// Whether an error of kind `key` should be logged now; if so, how many
    /// of its kind went unlogged since the last line.
    pub(crate) fn admit(&self, key: &'static str) -> Option<u64> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match seen.get_mut(key) {
            Some(s) if now.duration_since(s.logged) < EVERY => {
                s.suppressed += 1;
                None
            }
            Some(s) => {
                let suppressed = s.suppressed;
                s.logged = now;
                s.suppressed = 0;
                Some(suppressed)
            }
            None => {
                seen.insert(
                    key,
                    Seen {
                        logged: now,
                        suppressed: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_of_a_kind_is_logged_and_repeats_are_counted() {
        let t = Throttle::default();
        assert_eq!(t.admit("flush"), Some(0));
        assert_eq!(t.admit("flush"), None);
        assert_eq!(t.admit("flush"), None);
        assert_eq!(t.admit("dead-letter"), Some(0));
        t.seen.lock().unwrap().get_mut("flush").unwrap().logged -= EVERY;
        assert_eq!(t.admit("flush"), Some(2));
    }
}
