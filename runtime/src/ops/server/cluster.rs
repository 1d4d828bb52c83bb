//! A three-node JetStream cluster of local `nats-server` children, for the
//! tests and the benchmark: every node with its own store, on ports the
//! servers pick, killed when dropped.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use anyhow::{Context as _, bail};
use async_nats::jetstream;

use super::{Group, find_binary, spawn};

/// The cluster name every node of a [`NatsCluster`] shares.
const CLUSTER_NAME: &str = "wharf";

/// A three-node JetStream cluster on 127.0.0.1, for tests and measurements
/// of failover: each node has its own temporary store, a client port and a
/// route port the server picks, and a server name (`n1`, `n2`, `n3`). Nodes
/// are numbered from 0, in that order. Every node is killed when the cluster
/// is dropped.
///
/// JetStream refuses to start a clustered server that has no route to
/// solicit, and the first node cannot know another node's route port before
/// that node exists. So the first node starts without JetStream, only to
/// take its ports; the second and third start with JetStream and route to
/// the nodes before them; then the first is restarted with JetStream on the
/// same ports, routing to the other two. A restarted node always routes to
/// the two others, and they keep soliciting routes to it while it is down.
pub struct NatsCluster {
    bin: PathBuf,
    nodes: Vec<Node>,
    _temp: tempfile::TempDir,
}

/// One node of a [`NatsCluster`].
struct Node {
    name: String,
    client_port: u16,
    route_port: u16,
    store_dir: PathBuf,
    /// `None` while the node is killed.
    child: Option<Child>,
}

impl Node {
    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.client_port)
    }

    fn route_url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.route_port)
    }
}

impl NatsCluster {
    /// How many nodes a cluster has.
    pub const SIZE: usize = 3;

    /// Starts the three nodes and waits, up to 30 s, until each of them
    /// answers JetStream requests and a stream can have a replica on each
    /// (see [`NatsCluster::wait_ready`]).
    pub async fn start() -> anyhow::Result<NatsCluster> {
        let temp = tempfile::Builder::new()
            .prefix("wharf-cluster-")
            .tempdir()
            .context("creating store directories for the nats-server cluster")?;
        let mut cluster = NatsCluster {
            bin: find_binary()?,
            nodes: Vec::new(),
            _temp: temp,
        };
        for i in 0..NatsCluster::SIZE {
            let name = format!("n{}", i + 1);
            let store_dir = cluster._temp.path().join(&name);
            let routes: Vec<String> = cluster.nodes.iter().map(Node::route_url).collect();
            let args = node_args(&name, &store_dir, None, None, &routes, i > 0);
            let (child, listening) = spawn(&cluster.bin, &args, true, Group::Parent)
                .with_context(|| format!("starting cluster node {name}"))?;
            cluster.nodes.push(Node {
                name,
                client_port: listening.client,
                route_port: listening
                    .route
                    .context("a cluster node reports its route port")?,
                store_dir,
                child: Some(child),
            });
        }
        cluster.restart(0)?;
        cluster.wait_ready(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    /// The seed list of every node's client URL, comma-separated, as the
    /// `[nats] url` of a host that should survive the loss of any one node.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(Node::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The client URL of node `i`.
    pub fn node_url(&self, i: usize) -> String {
        self.nodes[i].url()
    }

    /// The server name of node `i`.
    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// The node whose server name is `name`.
    pub fn node_named(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Whether node `i` runs (it was not killed, or was restarted since).
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }

    /// Stops node `i` at once, as a crash would, keeping its store.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills node `i` if it runs and starts it again on the same ports and
    /// store, routing to the other nodes; returns once it listens. It then
    /// catches up with the others by itself.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill(i);
        let routes: Vec<String> = (0..self.nodes.len())
            .filter(|&j| j != i)
            .map(|j| self.nodes[j].route_url())
            .collect();
        let node = &self.nodes[i];
        let args = node_args(
            &node.name,
            &node.store_dir,
            Some(node.client_port),
            Some(node.route_port),
            &routes,
            true,
        );
        let (child, _) = spawn(&self.bin, &args, true, Group::Parent)
            .with_context(|| format!("restarting cluster node {}", node.name))?;
        self.nodes[i].child = Some(child);
        Ok(())
    }

    /// Waits until every running node answers a JetStream account-info
    /// request, which only the meta leader answers, and a stream with a
    /// replica on each running node can be placed: the meta leader answers
    /// before it has taken every node in as a peer.
    pub async fn wait_ready(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        let late = |what: &str, node: &str, e: &anyhow::Error| {
            anyhow::anyhow!(
                "the nats-server cluster {what} within {}: node {node} answered: {e:#}",
                humantime::format_duration(within)
            )
        };
        let mut client = None;
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            let c = async_nats::connect(node.url())
                .await
                .with_context(|| format!("connecting to cluster node {}", node.name))?;
            while let Err(e) = account_info(&c).await {
                if tokio::time::Instant::now() > deadline {
                    return Err(late("had no JetStream meta leader", &node.name, &e));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            client.get_or_insert((c, &node.name));
        }
        let Some((client, name)) = client else {
            bail!("no node of the nats-server cluster is running");
        };
        let running = self.nodes.iter().filter(|n| n.child.is_some()).count();
        let js = jetstream::new(client);
        while let Err(e) = probe_placement(&js, running).await {
            if tokio::time::Instant::now() > deadline {
                let what = format!("could not place a stream on {running} nodes");
                return Err(late(&what, name, &e));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// The node that leads `stream`, or `None` while it has no leader.
    pub async fn stream_leader(
        &self,
        js: &jetstream::Context,
        stream: &str,
    ) -> anyhow::Result<Option<usize>> {
        let stream = js
            .get_stream(stream)
            .await
            .with_context(|| format!("reading the info of stream {stream}"))?;
        self.leader(stream.cached_info().cluster.as_ref())
    }

    /// The node that leads the consumer `consumer` on `stream`, or `None`
    /// while it has no leader.
    pub async fn consumer_leader(
        &self,
        js: &jetstream::Context,
        stream: &str,
        consumer: &str,
    ) -> anyhow::Result<Option<usize>> {
        let info = js
            .get_stream(stream)
            .await
            .with_context(|| format!("reading the info of stream {stream}"))?
            .consumer_info(consumer)
            .await
            .with_context(|| format!("reading the info of consumer {consumer} on {stream}"))?;
        self.leader(info.cluster.as_ref())
    }

    /// Maps the leader's server name in a stream's or consumer's cluster
    /// info to its node.
    fn leader(
        &self,
        cluster: Option<&jetstream::stream::ClusterInfo>,
    ) -> anyhow::Result<Option<usize>> {
        match cluster.and_then(|c| c.leader.as_deref()) {
            None | Some("") => Ok(None),
            Some(leader) => self
                .node_named(leader)
                .map(Some)
                .with_context(|| format!("the leader {leader} is not a node of this cluster")),
        }
    }
}

/// Asks JetStream for the account's info, as raw JSON: the shape of the
/// answer changed across server versions, and only whether it is an error
/// matters here.
async fn account_info(client: &async_nats::Client) -> anyhow::Result<()> {
    let answer = tokio::time::timeout(
        Duration::from_secs(1),
        client.request("$JS.API.INFO", bytes::Bytes::new()),
    )
    .await
    .context("no answer within 1s")??;
    let answer: serde_json::Value =
        serde_json::from_slice(&answer.payload).context("reading the answer")?;
    match answer.get("error") {
        Some(error) => bail!("{error}"),
        None => Ok(()),
    }
}

/// Creates and deletes a memory stream with `replicas` replicas, which
/// succeeds only once the meta leader counts that many nodes as peers.
async fn probe_placement(js: &jetstream::Context, replicas: usize) -> anyhow::Result<()> {
    const PROBE: &str = "WHARF_CLUSTER_PROBE";
    js.create_stream(jetstream::stream::Config {
        name: PROBE.into(),
        subjects: vec!["wharf.cluster.probe".into()],
        storage: jetstream::stream::StorageType::Memory,
        num_replicas: replicas,
        ..Default::default()
    })
    .await
    .context("creating a probe stream")?;
    js.delete_stream(PROBE)
        .await
        .context("deleting the probe stream")?;
    Ok(())
}

/// The command line of cluster node `name`: JetStream (unless
/// `with_jetstream` is false), 127.0.0.1 only, and the given ports, or
/// ports the server picks where they are `None`.
fn node_args(
    name: &str,
    store_dir: &Path,
    client_port: Option<u16>,
    route_port: Option<u16>,
    routes: &[String],
    with_jetstream: bool,
) -> Vec<OsString> {
    let port = |p: Option<u16>| p.map_or_else(|| "-1".to_string(), |p| p.to_string());
    let mut args: Vec<OsString> = Vec::new();
    if with_jetstream {
        args.extend(["-js".into(), "--store_dir".into(), store_dir.into()]);
    }
    args.extend(
        [
            "-a".to_string(),
            "127.0.0.1".into(),
            "-p".into(),
            port(client_port),
            "--server_name".into(),
            name.into(),
            "--cluster_name".into(),
            CLUSTER_NAME.into(),
            "--cluster".into(),
            format!("nats://127.0.0.1:{}", port(route_port)),
        ]
        .map(OsString::from),
    );
    if !routes.is_empty() {
        args.extend(["--routes".into(), routes.join(",").into()]);
    }
    args
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}
