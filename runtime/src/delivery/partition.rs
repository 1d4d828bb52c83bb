//! Partitions of an ordered handler's stream, read from the stream's own
//! subject transform: a destination with a `{{partition(n, …)}}` token
//! stores every message under a subject that names its partition, so each
//! partition gets a durable consumer of its own (`<consumer>-p<i>`, its
//! filter the destination with that token fixed), served by one host at a
//! time. A stream without such a transform has one partition: the
//! handler's own consumer.
//!
//! The key must decide the partition, or one key's messages would be split
//! between hosts: a whole-subject key always does (the partition token is
//! part of the subject); `subject:N` does when token N is the one wildcard
//! the partition hashes; a header never does.

use std::sync::Arc;

use async_nats::jetstream::{self, consumer::PriorityPolicy};

use crate::config::{HandlerConfig, OrderBy};
use crate::connect::{PRIORITY_GROUPS, server_version};
use crate::delivery::binding::{self, BindError, Seen};

/// A stream subject transform's destination with a partition token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Transform {
    /// How many partitions.
    pub count: u32,
    /// The source wildcards the partition hashes (1-based).
    hashed: Vec<usize>,
    /// The destination's tokens.
    tokens: Vec<Token>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(String),
    Wildcard(usize),
    Partition,
    /// Another mapping function: any value.
    Other,
}

/// Parses a destination token: `{{name(args)}}` or the older `$N`.
fn token(t: &str) -> Option<(String, Vec<String>)> {
    if let Some(n) = t.strip_prefix('$') {
        return Some(("wildcard".into(), vec![n.to_string()]));
    }
    let inner = t.strip_prefix("{{")?.strip_suffix("}}")?.trim();
    let (name, rest) = inner.split_once('(')?;
    let args = rest.strip_suffix(')')?;
    Some((
        name.trim().to_ascii_lowercase(),
        args.split(',').map(|a| a.trim().to_string()).collect(),
    ))
}

impl Transform {
    /// The partition transform in `destination`, if it has one.
    pub(crate) fn parse(destination: &str) -> Option<Transform> {
        let mut count = None;
        let mut hashed = Vec::new();
        let mut tokens = Vec::new();
        for t in destination.split('.') {
            tokens.push(match token(t) {
                None => Token::Literal(t.to_string()),
                Some((name, args)) if name == "partition" && count.is_none() => {
                    let mut args = args.iter().map(|a| a.parse::<usize>());
                    count = Some(u32::try_from(args.next()?.ok()?).ok()?);
                    hashed = args.collect::<Result<_, _>>().ok()?;
                    Token::Partition
                }
                Some((name, args)) if name == "wildcard" && args.len() == 1 => {
                    Token::Wildcard(args[0].parse().ok()?)
                }
                Some(_) => Token::Other,
            });
        }
        Some(Transform {
            count: count.filter(|c| *c > 0)?,
            hashed,
            tokens,
        })
    }

    /// The filter of partition `p`: the destination with the partition
    /// token fixed and every other mapped token a wildcard.
    pub(crate) fn filter(&self, p: u32) -> String {
        self.tokens
            .iter()
            .map(|t| match t {
                Token::Literal(l) => l.clone(),
                Token::Partition => p.to_string(),
                Token::Wildcard(_) | Token::Other => "*".into(),
            })
            .collect::<Vec<_>>()
            .join(".")
    }

    /// Whether every message of one key lands in one partition.
    fn keeps_keys_together(&self, order_by: &OrderBy) -> Result<(), String> {
        match order_by {
            OrderBy::Subject => Ok(()),
            OrderBy::Token(n) => match self.tokens.get(n - 1) {
                Some(Token::Wildcard(w)) if self.hashed == [*w] => Ok(()),
                _ => Err(format!(
                    "order_by = \"subject:{n}\", but the stream's partition is not computed \
                     from token {n} alone, so one key's messages would land in several \
                     partitions; partition by that token (`partition_by = \"subject:{n}\"`) \
                     or order by the whole subject"
                )),
            },
            OrderBy::Header(_) => Err(format!(
                "order_by = \"{order_by}\": a partitioned stream splits messages by subject \
                 tokens, and one key's messages would land in several partitions; order by \
                 the subject, or use a stream without partitions (one host serves it at a time)"
            )),
        }
    }
}

/// The durables one ordered handler binds: one per partition, each a copy
/// of the handler's settings with its own consumer name and filter.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub parts: Vec<Arc<HandlerConfig>>,
    /// The stream's partitions; `None` for one unpartitioned durable.
    pub partitions: Option<u32>,
}

/// The plan for `handler` on a stream whose subject transform has this
/// destination (if any); an error names what does not fit.
pub(crate) fn plan_for(handler: &HandlerConfig, destination: Option<&str>) -> Result<Plan, String> {
    let Some(order_by) = &handler.order_by else {
        return Err("not an ordered handler".into());
    };
    let Some(transform) = destination.and_then(Transform::parse) else {
        return Ok(Plan {
            parts: vec![Arc::new(handler.clone())],
            partitions: None,
        });
    };
    transform.keeps_keys_together(order_by)?;
    if let Some(f) = &handler.filter_subject {
        return Err(format!(
            "filter_subject \"{f}\" cannot be combined with a partitioned stream: each \
             partition's consumer filters on its partition; use a stream of its own"
        ));
    }
    let parts = (0..transform.count)
        .map(|p| {
            let mut part = handler.clone();
            part.consumer = format!("{}-p{p}", handler.consumer);
            part.filter_subject = Some(transform.filter(p));
            Arc::new(part)
        })
        .collect();
    Ok(Plan {
        parts,
        partitions: Some(transform.count),
    })
}

/// Reads the stream's partitions and binds one durable per partition
/// (creating it when absent, like `binding::consumer`). Refuses a key
/// that would span partitions, and pinning on a server without priority
/// groups.
pub(crate) async fn bind(
    js: &jetstream::Context,
    handler: &HandlerConfig,
    seen: Seen,
) -> Result<Plan, BindError> {
    let plan = plan(js, handler).await?;
    for part in &plan.parts {
        let consumer = binding::consumer(js, part, seen).await?;
        let have = &consumer.cached_info().config.priority_policy;
        if binding::pinned(handler) && *have != PriorityPolicy::PinnedClient {
            return Err(BindError::Config(too_old(js, handler)));
        }
    }
    Ok(plan)
}

/// What `bind` would bind, without touching a consumer.
pub(crate) async fn plan(
    js: &jetstream::Context,
    handler: &HandlerConfig,
) -> Result<Plan, BindError> {
    if binding::pinned(handler) && server_version(&js.client()) < PRIORITY_GROUPS {
        return Err(BindError::Config(too_old(js, handler)));
    }
    let stream = binding::stream(js, handler).await?;
    let destination = stream
        .cached_info()
        .config
        .subject_transform
        .as_ref()
        .map(|t| t.destination.clone());
    plan_for(handler, destination.as_deref()).map_err(|e| {
        BindError::Config(anyhow::anyhow!(
            "handler \"{}\": field `order_by`: stream \"{}\": {e}",
            handler.name,
            handler.stream
        ))
    })
}

fn too_old(js: &jetstream::Context, handler: &HandlerConfig) -> anyhow::Error {
    anyhow::anyhow!(
        "handler \"{}\": field `order_by`: ordered mode keeps each key on one host at a time \
         with consumer priority groups, which need nats-server 2.11 or later; this server is \
         {}. Upgrade the server, or, if this handler runs on one host only, set \
         `single_host = true`",
        handler.name,
        js.client().server_info().version
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Partitioning};

    fn handler(order_by: &str, extra: &str) -> HandlerConfig {
        Config::parse(
            std::path::Path::new("t.toml"),
            &format!(
                "[[handler]]\nname = \"h\"\ncomponent = \"h.wasm\"\nstream = \"IN\"\n\
                 dead_letter = \"dlq.h\"\norder_by = \"{order_by}\"\n{extra}"
            ),
        )
        .unwrap()
        .handlers
        .remove(0)
    }

    #[test]
    fn a_partition_transform_gives_one_filtered_durable_per_partition() {
        let dest = "orders.{{wildcard(1)}}.{{wildcard(2)}}.{{partition(3,1)}}";
        let t = Transform::parse(dest).unwrap();
        assert_eq!(t.count, 3);
        assert_eq!(t.filter(2), "orders.*.*.2");
        let plan = plan_for(&handler("subject:2", ""), Some(dest)).unwrap();
        assert_eq!(plan.partitions, Some(3));
        let names: Vec<(&str, Option<&str>)> = plan
            .parts
            .iter()
            .map(|p| (p.consumer.as_str(), p.filter_subject.as_deref()))
            .collect();
        assert_eq!(
            names,
            [
                ("wharf-h-p0", Some("orders.*.*.0")),
                ("wharf-h-p1", Some("orders.*.*.1")),
                ("wharf-h-p2", Some("orders.*.*.2")),
            ]
        );
    }

    #[test]
    fn what_wharf_dev_creates_is_read_back() {
        let p = Partitioning {
            count: 8,
            by: OrderBy::Token(2),
        };
        let (_, dest) = p.transform("orders.*.*").unwrap();
        let t = Transform::parse(&dest).unwrap();
        assert_eq!(t.count, 8);
        assert!(plan_for(&handler("subject:2", ""), Some(&dest)).is_ok());
        assert!(plan_for(&handler("subject", ""), Some(&dest)).is_ok());
    }

    #[test]
    fn keys_that_would_span_partitions_are_refused() {
        let by_both = "orders.{{wildcard(1)}}.{{wildcard(2)}}.{{partition(4,1,2)}}";
        let err = plan_for(&handler("subject:2", ""), Some(by_both)).unwrap_err();
        assert!(err.contains("token 2 alone"), "{err}");
        let err = plan_for(&handler("header:Order-Id", ""), Some(by_both)).unwrap_err();
        assert!(err.contains("several partitions"), "{err}");
        let err = plan_for(
            &handler("subject", "filter_subject = \"orders.a.*\""),
            Some(by_both),
        )
        .unwrap_err();
        assert!(err.contains("filter_subject"), "{err}");
        // Spaces, case and the older `$N` form are read too.
        let spaced = "o.$1.{{ Partition(2, 1) }}";
        assert_eq!(Transform::parse(spaced).unwrap().filter(1), "o.*.1");
        assert!(plan_for(&handler("subject:2", ""), Some(spaced)).is_ok());
    }

    #[test]
    fn a_stream_without_a_partition_token_is_one_partition() {
        assert_eq!(Transform::parse("orders.{{wildcard(1)}}"), None);
        let plan = plan_for(&handler("header:Order-Id", ""), None).unwrap();
        assert_eq!(plan.partitions, None);
        assert_eq!(plan.parts[0].consumer, "wharf-h");
    }
}
