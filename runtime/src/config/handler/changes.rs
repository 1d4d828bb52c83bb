//! What a reload may not change in a handler.

use super::HandlerConfig;

impl HandlerConfig {
    /// The settings a reload cannot change, because they shape the consumer,
    /// the pull loop or what was bound at start-up: those of `self` that
    /// differ from `other`.
    pub fn binding_changes(&self, other: &HandlerConfig) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if self.stream != other.stream {
            changed.push("stream");
        }
        if self.consumer != other.consumer {
            changed.push("consumer");
        }
        if self.filter_subject != other.filter_subject {
            changed.push("filter_subject");
        }
        if self.ack_wait != other.ack_wait {
            changed.push("ack_wait");
        }
        if self.concurrency != other.concurrency {
            changed.push("concurrency");
        }
        if self.prefetch != other.prefetch {
            changed.push("prefetch");
        }
        if self.recreate_consumer != other.recreate_consumer {
            changed.push("recreate_consumer");
        }
        if self.order_by != other.order_by {
            changed.push("order_by");
        }
        if self.key_after_dead_letter != other.key_after_dead_letter {
            changed.push("key_after_dead_letter");
        }
        if self.single_host != other.single_host {
            changed.push("single_host");
        }
        // Batches shape the workers and the pull bound, and decide which
        // export the component must have.
        if self.batch != other.batch {
            changed.push("batch");
        }
        // Buckets are opened, and the effects stream found, at start-up.
        if self.kv.buckets != other.kv.buckets {
            changed.push("kv");
        }
        changed
    }
}
