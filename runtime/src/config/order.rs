//! Ordered mode's vocabulary: where a message's key comes from
//! (`order_by`), what a key does after one of its messages is
//! dead-lettered (`key_after_dead_letter`), and how a `[[stream]]` is split
//! into partitions for several hosts (`partitions`, `partition_by`).

use std::fmt;

use super::Site;

/// Where a message's ordering key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderBy {
    /// The whole subject.
    Subject,
    /// One token of the subject, counted from 1.
    Token(usize),
    /// The first value of a header, its name matched in any case.
    Header(String),
}

/// The most tokens a subject key may name (NATS subjects are short).
const MAX_TOKEN: usize = 256;

impl OrderBy {
    /// Parses `"subject"`, `"subject:N"` or `"header:Name"`.
    pub fn parse(s: &str) -> Result<OrderBy, String> {
        let bad = || {
            format!(
                "\"{s}\" is not a key; write \"subject\" (the whole subject), \"subject:2\" \
                 (its second token) or \"header:Order-Id\" (a header's value)"
            )
        };
        match s.split_once(':') {
            None if s == "subject" => Ok(OrderBy::Subject),
            Some(("subject", n)) => match n.parse::<usize>() {
                Ok(n) if (1..=MAX_TOKEN).contains(&n) => Ok(OrderBy::Token(n)),
                _ => Err(format!(
                    "\"{s}\": the token is counted from 1, up to {MAX_TOKEN}"
                )),
            },
            Some(("header", name)) => {
                let ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_graphic() && c != ':');
                if ok {
                    Ok(OrderBy::Header(name.to_string()))
                } else {
                    Err(format!(
                        "\"{s}\": a header name needs printable characters, no ':'"
                    ))
                }
            }
            _ => Err(bad()),
        }
    }

    /// The key of a message on `subject`; `header` looks up a header's
    /// first value. A message without the token or the header (or with an
    /// empty value) has the empty key: such messages are ordered among
    /// themselves.
    pub fn key(&self, subject: &str, header: impl FnOnce(&str) -> Option<String>) -> String {
        match self {
            OrderBy::Subject => subject.to_string(),
            OrderBy::Token(n) => subject.split('.').nth(n - 1).unwrap_or("").to_string(),
            OrderBy::Header(name) => header(name).unwrap_or_default(),
        }
    }
}

impl fmt::Display for OrderBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OrderBy::Subject => f.write_str("subject"),
            OrderBy::Token(n) => write!(f, "subject:{n}"),
            OrderBy::Header(name) => write!(f, "header:{name}"),
        }
    }
}

/// What happens to a key after one of its messages is dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterDeadLetter {
    /// The key's next message runs (the default; like SQS FIFO after its
    /// dead-letter queue).
    Continue,
    /// The key stops: its later messages are dead-lettered as `blocked`
    /// while the dead-letter stream holds the copy of the message that
    /// stopped it.
    Stop,
}

impl AfterDeadLetter {
    pub(super) fn parse(s: Option<&str>) -> Result<AfterDeadLetter, String> {
        match s {
            None | Some("continue") => Ok(AfterDeadLetter::Continue),
            Some("stop") => Ok(AfterDeadLetter::Stop),
            Some(other) => Err(format!(
                "unknown value \"{other}\"; expected \"continue\" or \"stop\""
            )),
        }
    }
}

/// How `wharf dev` splits a declared stream into partitions: every message
/// is stored under its subject plus one more token, the partition JetStream
/// computes from the tokens `by` names, so that each partition can have a
/// durable consumer of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partitioning {
    /// How many partitions.
    pub count: u32,
    /// The subject tokens hashed: the whole subject (its `*` tokens) or one token.
    pub by: OrderBy,
}

/// The most partitions a stream may have: each is a durable consumer, and
/// each host runs a pull loop for it.
pub const MAX_PARTITIONS: u32 = 256;

impl Partitioning {
    /// The stream subject transform for `pattern` (one subject with `*`
    /// wildcards only): `(source, destination)`, the destination being the
    /// pattern plus a last token `{{partition(count, …)}}`.
    pub fn transform(&self, pattern: &str) -> Result<(String, String), String> {
        let tokens: Vec<&str> = pattern.split('.').collect();
        if tokens.contains(&">") {
            return Err(format!(
                "\"{pattern}\": a partitioned stream's subject may not end in '>'; \
                 name every token (with '*')"
            ));
        }
        let mut wildcards = Vec::new();
        let mut dest = Vec::new();
        for (i, t) in tokens.iter().enumerate() {
            if *t == "*" {
                wildcards.push((i + 1, wildcards.len() + 1));
                dest.push(format!("{{{{wildcard({})}}}}", wildcards.len()));
            } else {
                dest.push(t.to_string());
            }
        }
        let hashed: Vec<usize> = match &self.by {
            OrderBy::Subject => wildcards.iter().map(|(_, w)| *w).collect(),
            OrderBy::Token(n) => match wildcards.iter().find(|(t, _)| t == n) {
                Some((_, w)) => vec![*w],
                None => {
                    return Err(format!(
                        "partition_by = \"subject:{n}\": token {n} of \"{pattern}\" is not a '*'"
                    ));
                }
            },
            OrderBy::Header(_) => {
                return Err("JetStream partitions by subject tokens, not headers; \
                     use \"subject\" or \"subject:N\""
                    .into());
            }
        };
        if hashed.is_empty() {
            return Err(format!("\"{pattern}\" has no '*' token to partition by"));
        }
        let args: Vec<String> = hashed.iter().map(|w| w.to_string()).collect();
        dest.push(format!(
            "{{{{partition({},{})}}}}",
            self.count,
            args.join(",")
        ));
        Ok((pattern.to_string(), dest.join(".")))
    }
}

/// Ordered mode's settings, which only go with `order_by`.
pub(super) fn settings(
    site: &Site<'_>,
    order_by: Option<&str>,
    key_after_dead_letter: Option<&str>,
    single_host: Option<bool>,
    dead_letter: bool,
) -> (Option<OrderBy>, AfterDeadLetter, bool) {
    let after = AfterDeadLetter::parse(key_after_dead_letter).unwrap_or_else(|e| {
        site.report("key_after_dead_letter", e);
        AfterDeadLetter::Continue
    });
    let Some(order_by) = order_by else {
        for (set, field) in [
            (key_after_dead_letter.is_some(), "key_after_dead_letter"),
            (single_host.is_some(), "single_host"),
        ] {
            if set {
                site.report(field, "only applies with order_by");
            }
        }
        return (None, after, false);
    };
    let order_by = OrderBy::parse(order_by)
        .map_err(|e| site.report("order_by", e))
        .ok();
    if after == AfterDeadLetter::Stop && !dead_letter {
        site.report(
            "key_after_dead_letter",
            "\"stop\" needs a dead_letter subject: a key stays stopped while the \
             dead-letter stream holds the copy of the message that stopped it",
        );
    }
    (order_by, after, single_host.unwrap_or(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_from_the_subject_a_token_or_a_header() {
        let none = |_: &str| None;
        assert_eq!(
            OrderBy::parse("subject").unwrap().key("a.b.c", none),
            "a.b.c"
        );
        assert_eq!(OrderBy::parse("subject:2").unwrap().key("a.b.c", none), "b");
        // A missing token is the empty key.
        assert_eq!(OrderBy::parse("subject:4").unwrap().key("a.b.c", none), "");
        let by_header = OrderBy::parse("header:Order-Id").unwrap();
        assert_eq!(
            by_header.key("a", |name| (name == "Order-Id").then(|| "o-7".to_string())),
            "o-7"
        );
        assert_eq!(by_header.key("a", none), "");
        assert_eq!(by_header.to_string(), "header:Order-Id");
    }

    #[test]
    fn bad_keys_say_what_to_write() {
        for bad in [
            "",
            "subjects",
            "subject:0",
            "subject:x",
            "header:",
            "header:a:b",
            "Subject",
        ] {
            assert!(OrderBy::parse(bad).is_err(), "{bad}");
        }
        assert!(
            OrderBy::parse("token:2")
                .unwrap_err()
                .contains("\"header:Order-Id\"")
        );
    }

    #[test]
    fn a_partition_transform_appends_the_partition_of_the_key_tokens() {
        let whole = Partitioning {
            count: 8,
            by: OrderBy::Subject,
        };
        assert_eq!(
            whole.transform("orders.*.*").unwrap(),
            (
                "orders.*.*".to_string(),
                "orders.{{wildcard(1)}}.{{wildcard(2)}}.{{partition(8,1,2)}}".to_string()
            )
        );
        let token = Partitioning {
            count: 4,
            by: OrderBy::Token(2),
        };
        assert_eq!(
            token.transform("orders.*.*").unwrap().1,
            "orders.{{wildcard(1)}}.{{wildcard(2)}}.{{partition(4,1)}}"
        );
        assert!(token.transform("orders.x.*").is_err());
        assert!(token.transform("orders.>").is_err());
        assert!(whole.transform("orders.all").is_err());
    }
}
