//! The example pipeline (examples/order-validator) end to end.

use std::collections::HashSet;
use std::path::Path;

use wharf::config::Config;

use crate::support::*;

/// 1,000 orders through the example: nothing pending afterwards, every
/// malformed order dead-lettered with its reason, every valid one published once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_orders_through_the_example() {
    guests();
    let server = server();
    let js = js(&server).await;
    let path = root().join("examples/order-validator/wharf.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut config = Config::parse(&path, &text).unwrap();
    config.nats.url = Some(server.url());
    wharf::dev::create_streams(&js, &config).await.unwrap();

    let mut valid = HashSet::new();
    let mut malformed = 0;
    for i in 0..1000 {
        let body = match i % 10 {
            0 => "{not json".to_string(),
            1 => format!(r#"{{"id":"o{i}","customer":"c","items":[]}}"#),
            2 => format!(
                r#"{{"id":"o{i}","customer":"c","items":[{{"sku":"BUSY-1","qty":1,"price_cents":250}}]}}"#
            ),
            _ => format!(
                r#"{{"id":"o{i}","customer":"c","items":[{{"sku":"A","qty":2,"price_cents":100}}]}}"#
            ),
        };
        if i % 10 < 2 {
            malformed += 1;
        } else {
            valid.insert(format!("o{i}"));
        }
        publish(&js, "orders.new", body.as_bytes(), &[("X-Source", "test")]).await;
    }
    let host = Host::start(config);
    wait_drained(&js, "ORDERS", "order-validator").await;
    host.stop().await.unwrap();

    let dls = messages(&js, "ORDERS_DLQ").await;
    assert_eq!(dls.len(), malformed);
    for dl in &dls {
        assert_eq!(header(dl, "Wharf-Reason-Kind"), Some("rejected"));
        assert_eq!(header(dl, "X-Source"), Some("test"));
        assert!(!header(dl, "Wharf-Reason").unwrap().is_empty());
    }
    let accepted = messages(&js, "ORDERS_ACCEPTED").await;
    let ids: Vec<String> = accepted
        .iter()
        .map(|m| header(m, "Order-Id").unwrap().to_string())
        .collect();
    let unique: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(
        ids.len(),
        valid.len(),
        "every valid order published exactly once"
    );
    assert_eq!(unique, valid);
    let _ = Path::new("");
}
