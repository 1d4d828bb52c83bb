//! Integration tests: a real nats-server per test, real guest components
//! built from `guests/`, and the host in-process or as the real binary.

mod support;

mod autoscale;
mod batch;
mod batch_sdks;
mod chaos;
mod cluster;
mod cluster_state;
mod compat;
mod compat_kv;
mod connect;
mod core;
mod counter_books;
mod crash;
mod dev;
mod dlq;
mod errors;
mod example;
mod failover;
mod hostile;
mod integrity;
mod layout;
mod no_std;
mod operations;
mod order;
mod order_cluster;
mod order_state;
mod outputs;
mod policy;
mod publish;
mod reasons;
mod release;
mod reload;
mod shutdown;
mod state;
mod streams;
mod telemetry;
mod worlds;
