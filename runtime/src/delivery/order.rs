//! Ordered mode's per-key line (`Keys`): pulled messages wait per key,
//! lowest stream sequence first, and a key's next message starts only
//! after the previous one has settled (acked or dead-lettered). Different
//! keys run in parallel on the handler's `concurrency` workers
//! (`order_line.rs`).
//!
//! A retry does not leave the host: the message waits out its delay as its
//! key's head, still held, then runs again, so a retry blocks its own key
//! and no other. A partition this host has just taken over is fenced:
//! nothing of it starts until the host that served it before has settled
//! what it held (`ordered.rs` opens the fence).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// One waiting message, with what the line orders it by.
#[derive(Debug)]
pub(crate) struct Item<T> {
    pub value: T,
    pub sequence: u64,
    pub partition: usize,
    /// When it joined the line, for the longest wait.
    pub since: Instant,
}

/// One key's messages.
#[derive(Debug)]
struct Key<T> {
    partition: usize,
    /// A message of the key is running (or settling).
    running: bool,
    /// The key's message waiting out its retry delay, and whether the delay has passed.
    retrying: Option<(Item<T>, bool)>,
    /// Waiting messages, lowest stream sequence first.
    waiting: VecDeque<Item<T>>,
    /// In the ready queue.
    queued: bool,
}

impl<T> Key<T> {
    fn startable(&self) -> bool {
        !self.running
            && match &self.retrying {
                Some((_, due)) => *due,
                None => !self.waiting.is_empty(),
            }
    }

    /// Messages of the key that wait for an earlier one.
    fn blocked(&self) -> bool {
        !self.waiting.is_empty() && (self.running || self.retrying.is_some())
    }
}

/// How many emptied queues of keys that went away are kept for new keys.
const SPARE_QUEUES: usize = 256;
/// The largest of those kept, in messages: a queue of a key that once had
/// many waiting is let go rather than kept at that size.
const SPARE_CAPACITY: usize = 4;

/// The per-key line: which message may start next. Every method that can
/// make a key ready returns how many keys it queued, so that the caller can
/// wake as many workers.
#[derive(Debug)]
pub(crate) struct Keys<T> {
    keys: HashMap<String, Key<T>>,
    ready: VecDeque<String>,
    fenced: Vec<bool>,
    /// Messages waiting (not running), retries in place included: kept as
    /// they come and go, since every change of the line reports it.
    waiting: usize,
    /// Emptied queues of keys that went away. Most keys come and go with
    /// one message each; reusing their queues spares an allocation the
    /// size of a few messages for each of them.
    spare: Vec<VecDeque<Item<T>>>,
}

impl<T> Keys<T> {
    pub(crate) fn new(partitions: usize) -> Keys<T> {
        Keys {
            keys: HashMap::new(),
            ready: VecDeque::new(),
            fenced: vec![false; partitions],
            waiting: 0,
            spare: Vec::new(),
        }
    }

    /// Adds a pulled message behind the messages of its key with lower
    /// sequences.
    pub(crate) fn join(&mut self, key: String, item: Item<T>) -> usize {
        let partition = item.partition;
        let spare = &mut self.spare;
        let k = self.keys.entry(key.clone()).or_insert_with(|| Key {
            partition,
            running: false,
            retrying: None,
            waiting: spare.pop().unwrap_or_default(),
            queued: false,
        });
        self.waiting += 1;
        let at = k.waiting.partition_point(|w| w.sequence < item.sequence);
        k.waiting.insert(at, item);
        self.queue(&key)
    }

    /// The next message to start, the head of the first ready key; its key
    /// is running until `settled` or `retry`.
    pub(crate) fn next(&mut self) -> Option<(String, Item<T>)> {
        while let Some(key) = self.ready.pop_front() {
            let Some(k) = self.keys.get_mut(&key) else {
                continue;
            };
            k.queued = false;
            if !k.startable() || self.fenced[k.partition] {
                continue;
            }
            let item = match k.retrying.take() {
                Some((item, _)) => item,
                None => k.waiting.pop_front().expect("startable"),
            };
            k.running = true;
            self.waiting -= 1;
            return Some((key, item));
        }
        None
    }

    /// The key's running message settled: its next one may start.
    pub(crate) fn settled(&mut self, key: &str) -> usize {
        let Some(k) = self.keys.get_mut(key) else {
            return 0;
        };
        k.running = false;
        if k.waiting.is_empty() && k.retrying.is_none() {
            if let Some(gone) = self.keys.remove(key)
                && gone.waiting.capacity() <= SPARE_CAPACITY
                && self.spare.len() < SPARE_QUEUES
            {
                self.spare.push(gone.waiting);
            }
            return 0;
        }
        self.queue(key)
    }

    /// The key's running message runs again once its delay has passed
    /// (`due`); until then it stays the key's head and holds the key.
    pub(crate) fn retry(&mut self, key: &str, item: Item<T>) {
        if let Some(k) = self.keys.get_mut(key) {
            k.running = false;
            k.retrying = Some((item, false));
            self.waiting += 1;
        }
    }

    /// The retry delay of the key's message `sequence` has passed.
    pub(crate) fn due(&mut self, key: &str, sequence: u64) -> usize {
        match self.keys.get_mut(key).and_then(|k| k.retrying.as_mut()) {
            Some((item, due)) if item.sequence == sequence => *due = true,
            _ => return 0,
        }
        self.queue(key)
    }

    /// Fences a partition (nothing of it starts) or opens its fence.
    pub(crate) fn fence(&mut self, partition: usize, on: bool) -> usize {
        self.fenced[partition] = on;
        if on {
            return 0;
        }
        let mut keys: Vec<(u64, String)> = self
            .keys
            .iter()
            .filter(|(_, k)| k.partition == partition && k.startable() && !k.queued)
            .map(|(key, k)| {
                let head = k.retrying.as_ref().map(|(i, _)| i).or(k.waiting.front());
                (head.map_or(0, |i| i.sequence), key.clone())
            })
            .collect();
        keys.sort();
        keys.into_iter().map(|(_, key)| self.queue(&key)).sum()
    }

    pub(crate) fn is_fenced(&self, partition: usize) -> bool {
        self.fenced[partition]
    }

    /// Takes every message that is not running (waiting, or waiting to run
    /// again), lowest sequence first within each partition, each with
    /// whether it is its key's next message (no earlier one running or
    /// taken before it).
    pub(crate) fn take_waiting(&mut self) -> Vec<(String, Item<T>, bool)> {
        let mut out = Vec::new();
        self.keys.retain(|key, k| {
            let mut head = !k.running;
            for item in k
                .retrying
                .take()
                .map(|(i, _)| i)
                .into_iter()
                .chain(k.waiting.drain(..))
            {
                out.push((key.clone(), item, head));
                head = false;
            }
            k.running
        });
        self.ready.clear();
        for k in self.keys.values_mut() {
            k.queued = false;
        }
        self.waiting -= out.len();
        out.sort_by_key(|(_, item, _)| (item.partition, item.sequence));
        out
    }

    /// Takes the messages of one partition that are not running, lowest
    /// sequence first; their keys go on as if they had settled.
    pub(crate) fn take_partition(&mut self, partition: usize) -> Vec<Item<T>> {
        let mut out = Vec::new();
        self.keys.retain(|_, k| {
            if k.partition != partition {
                return true;
            }
            out.extend(k.retrying.take().map(|(i, _)| i));
            out.extend(k.waiting.drain(..));
            k.running
        });
        self.waiting -= out.len();
        out.sort_by_key(|item| item.sequence);
        out
    }

    /// Messages of one partition waiting here (not running).
    pub(crate) fn held(&self, partition: usize) -> usize {
        self.keys
            .values()
            .filter(|k| k.partition == partition)
            .map(|k| k.waiting.len() + usize::from(k.retrying.is_some()))
            .sum()
    }

    /// Messages waiting (not running), retries in place included.
    pub(crate) fn waiting(&self) -> usize {
        debug_assert_eq!(
            self.waiting,
            self.keys
                .values()
                .map(|k| k.waiting.len() + usize::from(k.retrying.is_some()))
                .sum::<usize>()
        );
        self.waiting
    }

    /// Keys with a message waiting behind an earlier one of the key (or in
    /// a fenced partition), and the longest such wait.
    pub(crate) fn blocked(&self, now: Instant) -> (usize, Duration) {
        let mut count = 0;
        let mut longest = Duration::ZERO;
        for k in self.keys.values() {
            if k.blocked() || (self.fenced[k.partition] && !k.waiting.is_empty()) {
                count += 1;
                if let Some(first) = k.waiting.front() {
                    longest = longest.max(now.saturating_duration_since(first.since));
                }
            }
        }
        (count, longest)
    }

    fn queue(&mut self, key: &str) -> usize {
        let Some(k) = self.keys.get_mut(key) else {
            return 0;
        };
        if k.queued || !k.startable() || self.fenced[k.partition] {
            return 0;
        }
        k.queued = true;
        self.ready.push_back(key.to_string());
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn item(sequence: u64) -> Item<u64> {
        item_in(0, sequence)
    }

    fn item_in(partition: usize, sequence: u64) -> Item<u64> {
        Item {
            value: sequence,
            sequence,
            partition,
            since: Instant::now(),
        }
    }

    fn next(keys: &mut Keys<u64>) -> Option<(String, u64)> {
        keys.next().map(|(k, i)| (k, i.value))
    }

    #[test]
    fn a_key_runs_one_message_at_a_time_in_sequence_order() {
        let mut keys = Keys::new(1);
        assert_eq!(keys.join("a".into(), item(2)), 1);
        assert_eq!(keys.join("a".into(), item(1)), 0);
        assert_eq!(keys.join("b".into(), item(3)), 1);
        // Different keys start in parallel; a's lower sequence goes first.
        assert_eq!(next(&mut keys), Some(("a".into(), 1)));
        assert_eq!(next(&mut keys), Some(("b".into(), 3)));
        assert_eq!(next(&mut keys), None, "a's next waits for its first");
        assert_eq!(keys.blocked(Instant::now()).0, 1);
        assert_eq!(keys.settled("a"), 1);
        assert_eq!(next(&mut keys), Some(("a".into(), 2)));
        keys.settled("a");
        keys.settled("b");
        assert_eq!(keys.waiting(), 0);
        assert!(keys.keys.is_empty());
    }

    /// A key that goes away leaves its emptied queue to the next new key.
    #[test]
    fn a_new_key_reuses_the_queue_of_one_that_went_away() {
        let mut keys = Keys::new(1);
        keys.join("a".into(), item(1));
        keys.next();
        keys.settled("a");
        assert_eq!((keys.spare.len(), keys.waiting()), (1, 0));
        keys.join("b".into(), item(2));
        assert_eq!((keys.spare.len(), keys.waiting()), (0, 1));
        assert_eq!(next(&mut keys), Some(("b".into(), 2)));
    }

    #[test]
    fn a_retry_blocks_its_key_and_no_other() {
        let mut keys = Keys::new(1);
        keys.join("a".into(), item(1));
        keys.join("a".into(), item(2));
        keys.join("b".into(), item(3));
        let (a, first) = keys.next().unwrap();
        keys.retry(&a, first);
        // b runs meanwhile; a's second message waits behind the retry.
        assert_eq!(next(&mut keys), Some(("b".into(), 3)));
        assert_eq!(next(&mut keys), None);
        keys.join("b".into(), item(4));
        keys.settled("b");
        assert_eq!(next(&mut keys), Some(("b".into(), 4)));
        assert_eq!(next(&mut keys), None, "a is still waiting out its delay");
        assert_eq!(keys.due("a", 1), 1);
        assert_eq!(
            next(&mut keys),
            Some(("a".into(), 1)),
            "the retry goes first"
        );
        keys.settled("a");
        assert_eq!(next(&mut keys), Some(("a".into(), 2)));
    }

    #[test]
    fn a_fenced_partition_starts_nothing_until_its_fence_opens() {
        let mut keys = Keys::new(2);
        keys.fence(1, true);
        keys.join("a".into(), item_in(1, 5));
        keys.join("b".into(), item_in(0, 6));
        assert_eq!(next(&mut keys), Some(("b".into(), 6)));
        assert_eq!(next(&mut keys), None);
        assert_eq!(keys.blocked(Instant::now()).0, 1);
        // A redelivery of an earlier message arrives while fenced: it goes first.
        keys.join("a".into(), item_in(1, 2));
        assert_eq!(keys.fence(1, false), 1);
        assert_eq!(next(&mut keys), Some(("a".into(), 2)));
    }

    #[test]
    fn take_waiting_marks_each_keys_next_message() {
        let mut keys = Keys::new(1);
        for (key, seq) in [("a", 1), ("a", 2), ("b", 3), ("b", 4), ("c", 5)] {
            keys.join(key.into(), item(seq));
        }
        let (b, _) = keys.next().unwrap();
        assert_eq!(b, "a");
        let (c, second) = keys.next().unwrap();
        keys.retry(&c, second);
        let taken: Vec<(String, u64, bool)> = keys
            .take_waiting()
            .into_iter()
            .map(|(k, i, head)| (k, i.value, head))
            .collect();
        assert_eq!(
            taken,
            vec![
                ("a".into(), 2, false),
                ("b".into(), 3, true),
                ("b".into(), 4, false),
                ("c".into(), 5, true),
            ]
        );
        assert_eq!(keys.waiting(), 0);
        assert_eq!(next(&mut keys), None);
    }

    #[test]
    fn take_partition_leaves_the_other_partitions_alone() {
        let mut keys = Keys::new(2);
        keys.fence(1, true);
        keys.join("a".into(), item_in(1, 7));
        keys.join("b".into(), item_in(0, 8));
        keys.join("c".into(), item_in(1, 3));
        let taken: Vec<u64> = keys
            .take_partition(1)
            .into_iter()
            .map(|i| i.value)
            .collect();
        assert_eq!(taken, [3, 7]);
        assert_eq!(next(&mut keys), Some(("b".into(), 8)));
        assert_eq!(keys.waiting(), 0);
    }

    /// The real line's timing: a retry waits out its delay while other keys
    /// run, then goes before its key's later messages.
    #[tokio::test(start_paused = true)]
    async fn a_retry_comes_due_after_its_delay() {
        let keys = Arc::new(Mutex::new(Keys::<u64>::new(1)));
        keys.lock().unwrap().join("a".into(), item(1));
        keys.lock().unwrap().join("a".into(), item(2));
        let (key, first) = keys.lock().unwrap().next().unwrap();
        keys.lock().unwrap().retry(&key, first);
        let timer = {
            let keys = keys.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(5)).await;
                keys.lock().unwrap().due("a", 1)
            })
        };
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(keys.lock().unwrap().next().is_none());
        assert_eq!(timer.await.unwrap(), 1);
        assert_eq!(keys.lock().unwrap().next().map(|(_, i)| i.value), Some(1));
    }
}
