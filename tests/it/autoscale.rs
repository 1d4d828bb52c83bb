//! The autoscaling kit: KEDA's ScaledObject matches the example config,
//! and the host exports the figure the scaler scales on.

use crate::support::*;

fn yaml(file: &str) -> serde_yaml::Value {
    let path = root().join("examples/kubernetes").join(file);
    serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The ScaledObject scales the example Deployment on the example config's
/// handlers, one `nats-jetstream` trigger for each (its stream and durable
/// consumer), with a lag threshold above what one pod holds by itself
/// (`concurrency + prefetch` ack-pending messages), and never to fewer than
/// one pod.
#[test]
fn the_scaled_object_matches_the_example_config() {
    let scaled = yaml("scaledobject.yaml");
    let deployment = yaml("deployment.yaml");
    assert_eq!(scaled["apiVersion"].as_str(), Some("keda.sh/v1alpha1"));
    assert_eq!(scaled["kind"].as_str(), Some("ScaledObject"));
    let spec = &scaled["spec"];
    assert_eq!(
        spec["scaleTargetRef"]["name"].as_str(),
        deployment["metadata"]["name"].as_str(),
        "it scales the example Deployment"
    );
    let min = spec["minReplicaCount"].as_u64().unwrap();
    let max = spec["maxReplicaCount"].as_u64().unwrap();
    assert!(1 <= min && min <= max, "replicas {min}..{max}");

    let configmap = yaml("configmap.yaml");
    let text = configmap["data"]["wharf.toml"].as_str().unwrap();
    let config = wharf::config::Config::parse(std::path::Path::new("wharf.toml"), text)
        .expect("the ConfigMap's wharf.toml is a valid config");
    let triggers = spec["triggers"].as_sequence().unwrap();
    assert_eq!(
        triggers.len(),
        config.handlers.len(),
        "one trigger per handler"
    );
    for handler in &config.handlers {
        let trigger = triggers
            .iter()
            .find(|t| t["metadata"]["consumer"].as_str() == Some(handler.consumer.as_str()))
            .unwrap_or_else(|| panic!("no trigger for consumer {}", handler.consumer));
        assert_eq!(trigger["type"].as_str(), Some("nats-jetstream"));
        let meta = &trigger["metadata"];
        assert_eq!(meta["stream"].as_str(), Some(handler.stream.as_str()));
        let endpoint = meta["natsServerMonitoringEndpoint"].as_str().unwrap();
        assert!(endpoint.ends_with(":8222"), "{endpoint}");
        // KEDA takes its metadata as strings.
        let threshold: u64 = meta["lagThreshold"]
            .as_str()
            .expect("lagThreshold is a string")
            .parse()
            .unwrap();
        let held = (handler.concurrency + handler.prefetch) as u64;
        assert!(
            threshold > held,
            "handler {}: lagThreshold {threshold} is not above the {held} messages one pod holds",
            handler.name
        );
    }
}

/// `wharf_consumer_backlog_messages` is the consumer's pending plus
/// ack-pending messages, the figure KEDA's scaler reads from the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backlog_gauge_is_pending_plus_ack_pending() {
    let (server, js) = bed().await;
    // Sixty messages of 300 ms, two at a time: a backlog for longer than
    // the host's 5 s poll of the consumer's info.
    for _ in 0..60 {
        publish_behave(&js, "in.a", "sleep:300").await;
    }
    let port = free_port();
    let mut config = behave_config(&server, "concurrency = 2\nprefetch = 1");
    config.runtime.metrics_addr = Some(([127, 0, 0, 1], port).into());
    let host = Host::start(config);
    let labels = [("handler", "test"), ("stream", "IN"), ("consumer", "test")];
    eventually("the backlog gauge adds up, with a backlog", || async {
        let Some((200, m)) = http_get(port, "/metrics").await else {
            return false;
        };
        let get = |name| sample(&m, name, &labels);
        match (
            get("wharf_consumer_backlog_messages"),
            get("wharf_consumer_pending_messages"),
            get("wharf_consumer_ack_pending_messages"),
        ) {
            (Some(backlog), Some(pending), Some(ack)) => {
                backlog > 0.0 && pending > 0.0 && ack > 0.0 && backlog == pending + ack
            }
            _ => false,
        }
    })
    .await;
    host.stop().await.unwrap();
}
