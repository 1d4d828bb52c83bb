//! An order validator, as a Wharf handler.
//!
//! - Malformed orders (not JSON, no items, a zero quantity) are rejected and
//!   land in the dead-letter stream with the reason.
//! - An order for a SKU the inventory service calls "busy" is retried: the
//!   first attempt asks for a redelivery after a short delay, the next succeeds.
//! - Valid orders are published to `orders.accepted` with their total.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use wharf_guest::{Error, Message, Result};

#[derive(Debug, Deserialize)]
struct Order {
    id: String,
    customer: String,
    items: Vec<Item>,
}

#[derive(Debug, Deserialize)]
struct Item {
    sku: String,
    qty: u32,
    price_cents: u64,
}

#[derive(Debug, Serialize)]
struct Accepted<'a> {
    id: &'a str,
    customer: &'a str,
    total_cents: u64,
    lines: usize,
}

fn handle(msg: Message) -> Result {
    let order: Order = msg.json()?;
    if order.items.is_empty() {
        return Err(Error::reject(format!("order {} has no items", order.id)));
    }
    if let Some(item) = order.items.iter().find(|i| i.qty == 0) {
        return Err(Error::reject(format!(
            "order {}: item {} has quantity 0",
            order.id, item.sku
        )));
    }
    // Stands in for a call to an inventory service that is briefly busy.
    let busy_prefix = wharf_guest::config("busy_sku_prefix").unwrap_or_else(|| "BUSY-".into());
    if msg.attempt() == 1 && order.items.iter().any(|i| i.sku.starts_with(&busy_prefix)) {
        wharf_guest::warn!("inventory busy for order {}; retrying", order.id);
        return Err(Error::retry_after(Duration::from_millis(200)));
    }
    let total_cents = order
        .items
        .iter()
        .map(|i| u64::from(i.qty) * i.price_cents)
        .sum();
    let accepted = Accepted {
        id: &order.id,
        customer: &order.customer,
        total_cents,
        lines: order.items.len(),
    };
    let body = serde_json::to_vec(&accepted).map_err(|e| Error::reject(e.to_string()))?;
    wharf_guest::publish_with_headers(
        "orders.accepted",
        body,
        &[
            ("Content-Type", "application/json"),
            ("Order-Id", &order.id),
        ],
    )?;
    Ok(())
}

wharf_guest::handler!(handle);

/// Unit tests without the host: `cargo test -p order-validator --target
/// <your machine's target>` from `guests/` (the SDK's test host exists in
/// native builds).
#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use std::time::Duration;

    use wharf_guest::Message;
    use wharf_guest::testing::{Outcome, TestHost};

    use super::handle;

    /// The handler's settings in wharf.toml; like the host, the test host
    /// allows no subject unless given one.
    fn host() -> TestHost {
        TestHost::new()
            .allow("orders.accepted")
            .config("busy_sku_prefix", "BUSY-")
    }

    fn order(body: &str, attempt: u32) -> Message {
        Message::for_test("orders.new", body.as_bytes()).with_attempt(attempt, 4)
    }

    /// A valid order publishes its total to orders.accepted with the order id header.
    #[test]
    fn a_valid_order_is_published_with_its_total() {
        let run = host().run(
            handle,
            order(
                r#"{"id": "A-1", "customer": "ada", "items": [{"sku": "BOOK-1", "qty": 2, "price_cents": 1250}]}"#,
                1,
            ),
        );
        assert_eq!(run.outcome, Outcome::Ok);
        let out = &run.published[0];
        assert_eq!(out.subject, "orders.accepted");
        assert_eq!(
            out.text(),
            r#"{"id":"A-1","customer":"ada","total_cents":2500,"lines":1}"#
        );
        assert_eq!(out.header("order-id"), Some("A-1"));
    }

    /// Malformed orders are rejected with a reason; nothing is published.
    #[test]
    fn malformed_orders_are_rejected() {
        for (body, reason) in [
            (
                r#"{"id": "A-3", "customer": "c", "items": []}"#,
                "order A-3 has no items",
            ),
            (
                r#"{"id": "A-4", "customer": "c", "items": [{"sku": "X", "qty": 0, "price_cents": 1}]}"#,
                "order A-4: item X has quantity 0",
            ),
        ] {
            let run = host().run(handle, order(body, 1));
            assert_eq!(run.outcome, Outcome::Reject(reason.into()));
            assert!(run.published.is_empty());
        }
        let run = host().run(handle, order("{", 1));
        assert!(
            matches!(&run.outcome, Outcome::Reject(r) if r.starts_with("payload is not valid JSON"))
        );
    }

    /// A busy SKU asks for a 200 ms retry on attempt 1, and is accepted on attempt 2.
    #[test]
    fn a_busy_sku_is_retried_once() {
        let body = r#"{"id": "A-2", "customer": "bob", "items": [{"sku": "BUSY-7", "qty": 1, "price_cents": 999}]}"#;
        let first = host().run(handle, order(body, 1));
        assert_eq!(
            first.outcome,
            Outcome::Retry(Some(Duration::from_millis(200)))
        );
        assert!(first.published.is_empty());
        assert_eq!(host().run(handle, order(body, 2)).outcome, Outcome::Ok);
    }
}
