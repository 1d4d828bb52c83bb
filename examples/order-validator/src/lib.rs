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
