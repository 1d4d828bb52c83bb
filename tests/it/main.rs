//! Integration tests: a real nats-server per test, real guest components
//! built from `guests/`, and the host in-process or as the real binary.

mod support;

mod batch;
mod chaos;
mod cluster;
mod connect;
mod core;
mod counter_books;
mod crash;
mod dlq;
mod errors;
mod example;
mod failover;
mod hostile;
mod integrity;
mod layout;
mod no_std;
mod operations;
mod outputs;
mod policy;
mod release;
mod reload;
mod shutdown;
mod state;
mod telemetry;
